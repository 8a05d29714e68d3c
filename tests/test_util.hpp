// Shared helpers for the tests: paths and a named relative-error comparison.
#pragma once

#include <string>

#include "moeflow/models/two_layer.hpp"

namespace moeflow::testing {

// |actual - expected| / max(|expected|, tiny): the one relative-error formula of the tests.
double RelativeError(double actual, double expected);

std::string ModelPath(const std::string& file);  // models/<file>
std::string DataPath(const std::string& file);   // data/<file>
std::string CliPath();                           // the built moeflow executable
std::string Python();                            // the python3 that has h5py (Debian's)

// A fresh empty temporary folder, removed at exit.
std::string TempDir();

// Runs a shell command; returns its exit status and stores stdout+stderr in *output.
int RunCommand(const std::string& command, std::string* output);

// Writes `script` to a temporary file and runs it with Python(); like RunCommand.
int RunPython(const std::string& script, std::string* output);

// A block of `units` units with one link, weight and optional gate (the other members default).
UnitBlock Block(int units, LinkPtr link, double weight, LinkPtr gate = nullptr);

}  // namespace moeflow::testing
