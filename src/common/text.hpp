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

// The number of single-character insertions, deletions, substitutions and swaps of two
// neighbours that turn `a` into `b` (optimal string alignment), ignoring ASCII case.
std::size_t EditDistance(std::string_view a, std::string_view b);

// The candidates a mistyped `word` most likely meant, for "did you mean" hints. First those
// whose last dotted part equals the word's (the right name in the wrong section or without
// one: "sgd.t_end" and "t_end" give "integrate.t_end"); if there are none, those nearest to it
// by EditDistance, if that distance is at most max(1, min(3, (|word| + 2) / 4)). At most three,
// in the order of `candidates`; none when nothing is near.
std::vector<std::string> NearestNames(std::string_view word, const std::vector<std::string>& candidates);

// "; did you mean 'x'?" (or "'x' or 'y'?") for the NearestNames of `word`, or "" if none.
std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace moeflow::detail
