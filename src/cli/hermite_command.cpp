// moeflow hermite LINK [--order K] [--scale a] [--shift b] [--format table|csv]
#include <boost/program_options.hpp>
#include <iomanip>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/links/hermite.hpp"
#include "moeflow/links/link.hpp"

namespace moeflow::cli {

int RunHermiteCommand(const Args& args) {
  namespace po = boost::program_options;
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("link,l", po::value<std::string>(), "the link, e.g. relu, sigmoid, h(3), leaky_relu(0.1)")
      ("order,K", po::value<int>()->default_value(20), "largest order k (at most 100)")
      ("scale,a", po::value<double>()->default_value(1.0), "expand f(a z + b): a > 0")
      ("shift,b", po::value<double>()->default_value(0.0), "expand f(a z + b): b")
      ("format,f", po::value<std::string>()->default_value("table"), "table or csv (header k,c_k)");
  const po::variables_map vm = ParseArguments(args, opts, "link", "hermite");  // LINK or --link LINK
  if (vm.count("help")) {
    std::cout << "Usage: moeflow hermite LINK [--order K] [--scale a] [--shift b] [--format table|csv]\n"
                 "       (LINK may also be given as --link LINK)\n\n"
                 "Prints the normalised Hermite coefficients c_k = E[f(a z + b) h_k(z)], z ~ N(0,1),\n"
                 "h_k = He_k/sqrt(k!), for k = 0..K, then E[f^2], the tail E[f^2] - sum c_k^2 and the\n"
                 "information exponent (the first k >= 1 with |c_k| > "
              << kInformationExponentTolerance << " max(1, sqrt(E[f^2]))).\n\n"
              << opts << "\nLinks:\n";
    for (const std::string& l : KnownLinks()) std::cout << "  " << l << "\n";
    return kExitOk;
  }
  if (!vm.count("link")) throw InputError("missing LINK: moeflow hermite LINK, e.g. moeflow hermite relu (see moeflow hermite --help)");
  const std::string format = vm["format"].as<std::string>();
  if (format != "table" && format != "csv") {
    ThrowBadValue("--format", format, "is not one of: table, csv" + detail::DidYouMean(format, {"table", "csv"}));
  }
  LinkPtr link;
  try {
    link = MakeLink(vm["link"].as<std::string>());
  } catch (const InputError& e) {
    ThrowBadValue("--link", vm["link"].as<std::string>(), std::string("is not a valid link: ") + e.what());
  }
  const HermiteExpansion e =
      ExpandHermite(*link, vm["order"].as<int>(), vm["scale"].as<double>(), vm["shift"].as<double>());
  std::cout << std::setprecision(16);
  if (format == "csv") {
    std::cout << "k,c_k\n";
    for (std::size_t k = 0; k < e.coefficients.size(); ++k) std::cout << k << "," << e.coefficients[k] << "\n";
    std::cerr << "E[f^2] = " << e.second_moment << ", tail = " << e.tail
              << ", information exponent = " << e.information_exponent << "\n";
    return kExitOk;
  }
  std::cout << "link " << link->Spec() << "  (a = " << vm["scale"].as<double>() << ", b = " << vm["shift"].as<double>()
            << ")\n   k  c_k\n";
  for (std::size_t k = 0; k < e.coefficients.size(); ++k) {
    std::cout << std::setw(4) << k << "  " << std::setw(24) << e.coefficients[k] << "\n";
  }
  std::cout << "E[f^2]               " << e.second_moment << "\n"
            << "tail E[f^2]-sum c_k^2 " << e.tail << "\n"
            << "information exponent " << e.information_exponent << "\n";
  return kExitOk;
}

}  // namespace moeflow::cli
