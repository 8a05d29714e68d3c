// Command-line parsing shared by the commands.
#pragma once

#include <boost/program_options.hpp>

#include "cli/commands.hpp"

namespace moeflow::cli {

// Parses `args` against `visible` plus, if `positional` is not null, one positional argument
// stored under that name. Program_options errors become InputError("... (see moeflow COMMAND --help)").
boost::program_options::variables_map ParseArguments(const Args& args,
                                                     const boost::program_options::options_description& visible,
                                                     const char* positional, const char* command);

}  // namespace moeflow::cli
