// Command-line parsing shared by the commands.
#pragma once

#include <atomic>
#include <functional>
#include <boost/program_options.hpp>
#include <string>

#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"

#include "cli/commands.hpp"

namespace moeflow::cli {

// Parses `args` against `visible` plus, if `positional` is not null, one positional argument
// stored under that name. Program_options errors become InputError("... (see moeflow COMMAND --help)").
boost::program_options::variables_map ParseArguments(const Args& args,
                                                     const boost::program_options::options_description& visible,
                                                     const char* positional, const char* command);

// "moeflow COMMAND ARGS...", for the result files.
std::string CommandLine(const char* command, const Args& args);
// The file given with --output, else <model file stem><suffix>.h5 in the current folder; checked
// writable (io::CheckWritable) before the run, so a bad path costs nothing.
std::string OutputPath(const boost::program_options::variables_map& vm, const std::string& suffix = "");
// The model named by the positional "model", with every --set applied. Throws InputError.
io::ModelFile LoadModel(const boost::program_options::variables_map& vm, const char* command);
// --dry-run of flow and sgd: the model, built and checked by the caller, printed resolved (every
// key the run reads, defaults included: a model file that reproduces the run) under a header with
// the size of its state, its events and stages.
void PrintResolvedModel(const char* command, const std::string& model_path, const io::ModelFile& model,
                        const FlowSetup& setup);
// Ctrl-C and SIGTERM set the returned flag; runs poll it and stop cleanly.
const std::atomic<bool>* InstallInterruptHandler();
// Progress lines go to stderr only on a terminal (or with MOEFLOW_PROGRESS=1 in the environment)
// and never with --quiet.
bool ShowProgress(bool quiet);
// --threads: 0 means one per core; negative is rejected.
int ResolveThreads(const boost::program_options::variables_map& vm);
// A thread-safe SGD progress callback ("N SGD steps, rate, elapsed") on stderr, and the call
// that clears its line.
std::function<void(long long)> SgdProgressLine();
void ClearProgressLine();

}  // namespace moeflow::cli
