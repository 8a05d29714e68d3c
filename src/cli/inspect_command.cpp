// moeflow inspect FILE: a readable summary of any moeflow HDF5 file.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/commands.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow::cli {

int RunInspectCommand(const Args& args) {
  namespace po = boost::program_options;
  po::options_description visible("Options");
  visible.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(visible).add_options()("file", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see moeflow inspect --help)");
  }
  if (vm.count("help")) {
    std::cout << "Usage: moeflow inspect FILE\n\n"
                 "Prints a readable summary of a moeflow HDF5 file (or any HDF5 file): the root\n"
                 "attributes (model text, version, command, options, outcome), every dataset\n"
                 "with its shape, and the events with their times.\n\n"
              << visible;
    return kExitOk;
  }
  if (!vm.count("file")) throw InputError("missing FILE: moeflow inspect FILE");
  const std::string file = vm["file"].as<std::string>();
  std::cout << "file: " << file << "\n" << io::Describe(io::ReadFile(file));
  return kExitOk;
}

}  // namespace moeflow::cli
