#include "moeflow/version.hpp"

#include "moeflow/error.hpp"

namespace moeflow {

const char* Version() { return MOEFLOW_VERSION; }

void ThrowBadValue(const std::string& key, const std::string& value, const std::string& rule) {
  throw InputError("key '" + key + "': value '" + value + "' " + rule);
}

}  // namespace moeflow
