// Model files: INI text (Boost.Program_options' config-file rules), typed and validated access.
#include "moeflow/io/model_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow::io {

namespace {

using detail::DidYouMean;
using detail::Join;
using detail::Trim;
std::string FormatDouble(double v) { return detail::FormatNumber(v, 17); }

// Items separated by commas outside parentheses, so `hermite(0, 1), relu` is two items.
std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  int depth = 0;
  for (char ch : text + ",") {
    if (ch == ',' && depth == 0) {
      item = Trim(item);
      if (!item.empty()) items.push_back(item);
      item.clear();
      continue;
    }
    depth += ch == '(' ? 1 : ch == ')' ? -1 : 0;
    item += ch;
  }
  return items;
}

}  // namespace

std::optional<double> ParseNumber(const std::string& text) {
  const std::string t = Trim(text);
  if (t.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

ModelFile ModelFile::Load(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw InputError("model file '" + path + "': is a folder, not a file");
  std::ifstream in(path);
  if (!in) throw InputError("model file '" + path + "': cannot be opened (missing or unreadable)");
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

ModelFile ModelFile::Parse(const std::string& text, const std::string& origin) {
  // The INI rules of Boost.Program_options' config files (a test checks that both read every
  // shipped model alike), with the line of every syntax error: `#` starts a comment anywhere;
  // `[name]` prefixes the keys below it with `name.`; other lines are `key = value`, both trimmed.
  if (text.rfind(kHdf5Signature, 0) == 0) {
    throw InputError("model file '" + origin + "': is an HDF5 file (a result: moeflow inspect reads it), not a model "
                     "file (INI text)");
  }
  if (text.find('\0') != std::string::npos) {
    throw InputError("model file '" + origin + "': is not text (it holds NUL bytes); a model file is INI text");
  }
  ModelFile file;
  file.origin_ = origin;
  file.source_text_ = text;
  const auto fail = [&](int line, const std::string& what) {
    throw InputError("model file '" + origin + "', line " + std::to_string(line) + ": " + what);
  };
  std::map<std::string, int> line_of;  // key -> the line that gives it
  std::istringstream in(text);
  std::string raw, prefix;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string s = Trim(std::string_view(raw).substr(0, raw.find('#')));
    if (s.empty()) continue;
    if (s.front() == '[') {
      if (s.back() != ']') {
        fail(line, "'" + s + "' opens a section but does not close it: write [name] alone on its line");
      }
      prefix = Trim(std::string_view(s).substr(1, s.size() - 2));
      if (prefix.empty()) fail(line, "'" + s + "' names no section: write [name]");
      if (prefix.back() != '.') prefix += '.';
      continue;
    }
    const auto eq = s.find('=');
    if (eq == std::string::npos) fail(line, "'" + s + "' is not key = value, a [section] or a comment (# ...)");
    const std::string name = Trim(std::string_view(s).substr(0, eq));
    if (name.empty()) fail(line, "'" + s + "' has no key before '='");
    const std::string key = prefix + name;
    if (const auto first = line_of.find(key); first != line_of.end()) {
      fail(line, "key '" + key + "' is given twice (first on line " + std::to_string(first->second) +
                     "; each key may appear once)");
    }
    line_of.emplace(key, line);
    file.entries_.push_back({key, Trim(std::string_view(s).substr(eq + 1))});
  }
  return file;
}

void ModelFile::Set(const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string key = Trim(assignment.substr(0, eq));
  if (eq == std::string::npos || key.empty()) {
    throw InputError("--set '" + assignment + "': expected KEY=VALUE, e.g. --set d=1e6");
  }
  const std::string value = Trim(assignment.substr(eq + 1));
  overrides_.push_back(key + "=" + value);
  if (value.empty()) {  // "KEY=": the key is dropped, and the model reads its default
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key == key; }),
                   entries_.end());
    return;
  }
  for (Entry& e : entries_) {
    if (e.key == key) {
      e.value = value;
      return;
    }
  }
  entries_.push_back({key, value});
}

const ModelFile::Entry* ModelFile::Find(const std::string& key) const {
  for (const Entry& e : entries_) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

bool ModelFile::Has(const std::string& key) const { return Find(key) != nullptr; }

std::vector<std::string> ModelFile::SubsectionNames(const std::string& prefix) const {
  std::vector<std::string> names;
  const std::string head = prefix + ".";
  for (const Entry& e : entries_) {
    if (e.key.rfind(head, 0) != 0) continue;
    const std::string rest = e.key.substr(head.size());
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0) continue;
    const std::string name = rest.substr(0, dot);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  return names;
}

void ModelFile::Record(const std::string& key, const std::string& value) const {
  for (Entry& e : resolved_) {
    if (e.key == key) {
      e.value = value;
      return;
    }
  }
  resolved_.push_back({key, value});
}

void ModelFile::Fail(const std::string& key, const std::string& value, const std::string& rule) const {
  ThrowBadValue(key, value, rule);
}

std::string ModelFile::Require(const std::string& key) const {
  const Entry* e = Find(key);
  if (e == nullptr) throw InputError("key '" + key + "' is required but missing in '" + origin_ + "'");
  return e->value;
}

std::string ModelFile::GetString(const std::string& key, const std::string& fallback) const {
  const Entry* e = Find(key);
  const std::string value = e ? e->value : fallback;
  Record(key, value);
  return value;
}

std::string ModelFile::GetString(const std::string& key) const {
  const std::string value = Require(key);
  Record(key, value);
  return value;
}

std::string ModelFile::GetChoice(const std::string& key, const std::string& fallback,
                                 const std::vector<std::string>& choices) const {
  const std::string value = GetString(key, fallback);
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    Fail(key, value, "is not one of: " + Join(choices, ", ") + DidYouMean(value, choices));
  }
  return value;
}

double ModelFile::GetDouble(const std::string& key, double fallback) const {
  const Entry* e = Find(key);
  if (e == nullptr) {
    Record(key, FormatDouble(fallback));
    return fallback;
  }
  const auto v = ParseNumber(e->value);
  if (!v) Fail(key, e->value, "is not a finite number");
  Record(key, e->value);
  return *v;
}

double ModelFile::GetDouble(const std::string& key) const {
  const std::string text = Require(key);
  const auto v = ParseNumber(text);
  if (!v) Fail(key, text, "is not a finite number");
  Record(key, text);
  return *v;
}

double ModelFile::GetPositive(const std::string& key, double fallback) const {
  const double v = GetDouble(key, fallback);
  if (!(v > 0)) Fail(key, FormatDouble(v), "must be > 0");
  return v;
}

double ModelFile::GetNonNegative(const std::string& key, double fallback) const {
  const double v = GetDouble(key, fallback);
  if (!(v >= 0)) Fail(key, FormatDouble(v), "must be >= 0");
  return v;
}

long long ModelFile::GetInteger(const std::string& key, long long fallback, long long minimum) const {
  if (!Has(key)) {
    Record(key, std::to_string(fallback));
    return fallback;
  }
  return GetInteger(key, minimum);
}

long long ModelFile::GetInteger(const std::string& key, long long minimum) const {
  const std::string text = Require(key);
  const auto v = ParseNumber(text);
  const std::string rule = "must be an integer >= " + std::to_string(minimum);
  if (!v) Fail(key, text, "is not a number; it " + rule);
  if (*v != std::floor(*v) || *v < static_cast<double>(minimum)) Fail(key, text, rule);
  // Above 2^53 consecutive integers are no longer exact in double precision.
  if (*v > 9.0e15) Fail(key, text, "must be an integer in [" + std::to_string(minimum) + ", 9e15]");
  Record(key, text);
  return static_cast<long long>(*v);
}

int ModelFile::GetInt(const std::string& key, int fallback, int minimum, int maximum) const {
  const long long v = GetInteger(key, fallback, minimum);
  if (v > maximum) {
    Fail(key, Require(key), "must be an integer in [" + std::to_string(minimum) + ", " + std::to_string(maximum) + "]");
  }
  return static_cast<int>(v);
}

bool ModelFile::GetBool(const std::string& key, bool fallback) const {
  const std::string value = GetString(key, fallback ? "true" : "false");
  if (value == "true" || value == "yes" || value == "1" || value == "on") return true;
  if (value == "false" || value == "no" || value == "0" || value == "off") return false;
  Fail(key, value, "is not a boolean (true/false, yes/no, 1/0, on/off)");
}

std::vector<double> ModelFile::GetDoubleList(const std::string& key,
                                             const std::vector<double>& fallback) const {
  const Entry* e = Find(key);
  if (e == nullptr) {
    std::vector<std::string> items;
    for (double v : fallback) items.push_back(FormatDouble(v));
    Record(key, Join(items, ", "));
    return fallback;
  }
  std::vector<double> values;
  for (const std::string& item : SplitList(e->value)) {
    const auto v = ParseNumber(item);
    if (!v) Fail(key, e->value, "must be a comma-separated list of finite numbers ('" + item + "' is not)");
    values.push_back(*v);
  }
  Record(key, e->value);
  return values;
}

std::vector<std::string> ModelFile::GetStringList(const std::string& key,
                                                  const std::vector<std::string>& fallback) const {
  const Entry* e = Find(key);
  const std::vector<std::string> values = e ? SplitList(e->value) : fallback;
  Record(key, Join(values, ", "));
  return values;
}

LinkPtr ModelFile::GetLink(const std::string& key, const std::string& fallback) const {
  const std::string spec = GetString(key, fallback);
  try {
    LinkPtr link = MakeLink(spec);
    Record(key, link->Spec());
    return link;
  } catch (const InputError& e) {
    Fail(key, spec, std::string("is not a valid link: ") + e.what());
  }
}

std::vector<LinkPtr> ModelFile::GetLinkList(const std::string& key) const {
  const std::string text = GetString(key);
  std::vector<LinkPtr> links;
  std::vector<std::string> specs;
  for (const std::string& item : SplitList(text)) {
    try {
      links.push_back(MakeLink(item));
    } catch (const InputError& e) {
      Fail(key, text, "is not a list of valid links: '" + item + "': " + e.what());
    }
    specs.push_back(links.back()->Spec());
  }
  Record(key, Join(specs, ", "));
  return links;
}

void ModelFile::NotRead(const std::string& key, const std::string& reason) const { unused_[key] = reason; }

void ModelFile::CheckAllKeysUsed() const {
  for (const Entry& e : entries_) {
    const bool used = std::any_of(resolved_.begin(), resolved_.end(),
                                  [&](const Entry& r) { return r.key == e.key; });
    if (used) continue;
    if (const auto why = unused_.find(e.key); why != unused_.end()) {
      Fail(e.key, e.value,
           "is not used by this model: " + why->second + " (remove it, or drop it with --set " + e.key + "=)");
    }
    std::vector<std::string> known;
    for (const Entry& r : resolved_) known.push_back(r.key);
    Fail(e.key, e.value,
         "is not used by this model: unknown key" + DidYouMean(e.key, known) + " (known keys: " + Join(known, ", ") +
             ")");
  }
}

std::string ModelFile::ResolvedText() const {
  // Top-level keys first, then one [section] per prefix in order of first appearance.
  std::ostringstream out;
  std::vector<std::string> sections;
  std::map<std::string, std::vector<const Entry*>> by_section;
  for (const Entry& e : resolved_) {
    const auto dot = e.key.rfind('.');
    const std::string section = dot == std::string::npos ? "" : e.key.substr(0, dot);
    if (!by_section.count(section)) sections.push_back(section);
    by_section[section].push_back(&e);
  }
  std::stable_partition(sections.begin(), sections.end(), [](const std::string& s) { return s.empty(); });
  for (const std::string& section : sections) {
    if (!section.empty()) out << "\n[" << section << "]\n";
    for (const Entry* e : by_section[section]) {
      out << e->key.substr(section.empty() ? 0 : section.size() + 1) << " = " << e->value << "\n";
    }
  }
  return out.str();
}

}  // namespace moeflow::io
