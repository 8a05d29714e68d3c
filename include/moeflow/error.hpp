// moeflow/error.hpp
// The library's exception types. Bad input (a model file, an option, a link name) throws
// InputError with a message that names the key, the value and the rule; anything else that
// stops the library from doing its job (an unreadable file, an HDF5 failure) throws Error.
// Scientific outcomes of a run (divergence, NaN, step-size underflow) are not exceptions:
// they are reported in a RunSummary.
#pragma once

#include <stdexcept>
#include <string>

namespace moeflow {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InputError : public Error {
 public:
  using Error::Error;
};

// Throws InputError("key 'KEY': value 'VALUE' RULE"), the one message shape for bad input.
[[noreturn]] void ThrowBadValue(const std::string& key, const std::string& value,
                                const std::string& rule);

}  // namespace moeflow
