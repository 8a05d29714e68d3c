// moeflow inspect FILE: a readable summary of any moeflow HDF5 file.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow::cli {

int RunInspectCommand(const Args& args) {
  namespace po = boost::program_options;
  po::options_description visible("Options");
  visible.add_options()("help,h", "show this help");
  const po::variables_map vm = ParseArguments(args, visible, "file", "inspect");
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
  const io::Group root = io::ReadFile(file);  // nothing printed for a file that cannot be read
  std::cout << "file: " << file << "\n" << io::Describe(root);
  return kExitOk;
}

}  // namespace moeflow::cli
