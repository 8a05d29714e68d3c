// moeflow/version.hpp
// The version string written into every result file.
#pragma once

namespace moeflow {

const char* Version();

}  // namespace moeflow
