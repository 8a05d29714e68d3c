#include "cli/options.hpp"

#include "moeflow/error.hpp"

namespace moeflow::cli {

boost::program_options::variables_map ParseArguments(const Args& args,
                                                     const boost::program_options::options_description& visible,
                                                     const char* positional, const char* command) {
  namespace po = boost::program_options;
  po::options_description all;
  all.add(visible);
  po::positional_options_description positionals;
  if (positional != nullptr) {
    all.add_options()(positional, po::value<std::string>());
    positionals.add(positional, 1);
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positionals).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see moeflow " + command + " --help)");
  }
  return vm;
}

}  // namespace moeflow::cli
