// Internal: the few string helpers every layer uses for messages and model text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moeflow::detail {

// A number as text: `precision` significant digits (17 round-trips a double exactly).
std::string FormatNumber(double value, int precision = 6);

// Without leading and trailing white space.
std::string Trim(std::string_view text);

std::string Join(const std::vector<std::string>& items, std::string_view separator);

}  // namespace moeflow::detail
