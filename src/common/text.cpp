#include "common/text.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

namespace moeflow::detail {

std::string FormatNumber(double value, int precision) {
  std::ostringstream os;
  os.precision(precision);
  os << value;
  return os.str();
}

std::string Trim(std::string_view text) {
  std::size_t b = 0, e = text.size();
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
  return std::string(text.substr(b, e - b));
}

std::string Join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.append(separator);
    out.append(items[i]);
  }
  return out;
}

std::size_t EditDistance(std::string_view a, std::string_view b) {
  const auto same = [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  };
  // Rows i − 2, i − 1 and i of the (|a| + 1) × (|b| + 1) table of prefix distances.
  std::vector<std::size_t> before(b.size() + 1), previous(b.size() + 1), row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      row[j] = std::min({previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (same(a[i - 1], b[j - 1]) ? 0 : 1)});
      if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) && same(a[i - 2], b[j - 1])) {
        row[j] = std::min(row[j], before[j - 2] + 1);
      }
    }
    std::swap(before, previous);
    std::swap(previous, row);
  }
  return previous[b.size()];
}

std::vector<std::string> NearestNames(std::string_view word, const std::vector<std::string>& candidates) {
  constexpr std::size_t kMaxNames = 3;
  std::vector<std::string> nearest;
  // The right name in the wrong section, or without one: the strongest hint.
  const auto last_part = [](std::string_view name) {
    const auto dot = name.rfind('.');
    return dot == std::string_view::npos ? name : name.substr(dot + 1);
  };
  const std::string_view last = last_part(word);
  for (const std::string& c : candidates) {
    if (!last.empty() && c != word && last_part(c) == last && nearest.size() < kMaxNames) nearest.push_back(c);
  }
  if (!nearest.empty()) return nearest;
  // Else the names a few edits away, the nearest ones.
  const std::size_t allowed = std::max<std::size_t>(1, std::min<std::size_t>(3, (word.size() + 2) / 4));
  std::size_t best = allowed;
  for (const std::string& c : candidates) {
    if (c == word) continue;  // the word itself is no hint
    const std::size_t d = EditDistance(word, c);
    if (d > best) continue;
    if (d < best) {
      best = d;
      nearest.clear();
    }
    if (nearest.size() < kMaxNames) nearest.push_back(c);
  }
  return nearest;
}

std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::vector<std::string> names = NearestNames(word, candidates);
  if (names.empty()) return "";
  std::string hint = "; did you mean ";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) hint += i + 1 == names.size() ? " or " : ", ";
    hint += "'" + names[i] + "'";
  }
  return hint + "?";
}

}  // namespace moeflow::detail
