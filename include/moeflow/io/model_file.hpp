// moeflow/io/model_file.hpp
// A model file: INI text (Boost.Program_options config-file syntax: `key = value`,
// `[section]` prefixes the keys below it as `section.key`, `#` starts a comment) plus
// command-line overrides `--set key=value`.
//
// Values are read through typed getters that validate them and remember every key that was
// asked for, with its final value. After a model has been built, CheckAllKeysUsed() rejects
// any key the model did not ask for (a typo, or a key of another model), and ResolvedText()
// gives the complete model, defaults included, as INI text that reproduces the run.
#pragma once

#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow::io {

class ModelFile {
 public:
  // Reads and parses a file. Throws InputError for a missing file, a syntax error or a key
  // given twice, naming the line.
  static ModelFile Load(const std::string& path);
  // Parses INI text; `origin` names it in messages.
  static ModelFile Parse(const std::string& text, const std::string& origin);

  // Applies an override "key=value" (sets or adds the key); "key=" (an empty value) removes the
  // key, so the model reads its default. Throws InputError if malformed.
  void Set(const std::string& assignment);

  bool Has(const std::string& key) const;
  // The names N for which some key `prefix.N.*` exists, in order of first appearance.
  std::vector<std::string> SubsectionNames(const std::string& prefix) const;

  // Typed getters. The overloads without a default make the key required. Every rule
  // violation throws InputError("key 'K': value 'V' RULE").
  std::string GetString(const std::string& key, const std::string& fallback) const;
  std::string GetString(const std::string& key) const;
  std::string GetChoice(const std::string& key, const std::string& fallback,
                        const std::vector<std::string>& choices) const;
  double GetDouble(const std::string& key, double fallback) const;
  double GetDouble(const std::string& key) const;
  double GetPositive(const std::string& key, double fallback) const;     // > 0
  double GetNonNegative(const std::string& key, double fallback) const;  // >= 0
  // An integer >= minimum; accepts "1e6" but not "2.5".
  long long GetInteger(const std::string& key, long long fallback, long long minimum) const;
  long long GetInteger(const std::string& key, long long minimum) const;
  // An integer in [minimum, maximum] (counts stored as int: units, points, seeds, nodes; the
  // maximum at most 2^31 - 1): a larger value is rejected, never wrapped.
  int GetInt(const std::string& key, int fallback, int minimum,
             int maximum = std::numeric_limits<int>::max()) const;
  bool GetBool(const std::string& key, bool fallback) const;
  std::vector<double> GetDoubleList(const std::string& key, const std::vector<double>& fallback) const;
  std::vector<std::string> GetStringList(const std::string& key,
                                         const std::vector<std::string>& fallback) const;
  LinkPtr GetLink(const std::string& key, const std::string& fallback) const;
  // A comma-separated list of links (commas inside parentheses do not split).
  std::vector<LinkPtr> GetLinkList(const std::string& key) const;

  // Records that the model knows `key` but does not read it in this configuration, and why
  // (e.g. "it applies to population.backend = quadrature; this model uses sampled"):
  // CheckAllKeysUsed then names that reason instead of calling the key unknown.
  void NotRead(const std::string& key, const std::string& reason) const;
  // Throws InputError for the first key (in file order) that no getter asked for.
  void CheckAllKeysUsed() const;

  // Every key asked for, with its final value (defaults included), as INI text.
  std::string ResolvedText() const;
  // The file text as read, and the overrides applied, one "key=value" per entry.
  const std::string& SourceText() const { return source_text_; }
  const std::vector<std::string>& Overrides() const { return overrides_; }
  const std::string& Origin() const { return origin_; }

 private:
  struct Entry {
    std::string key;
    std::string value;
  };
  const Entry* Find(const std::string& key) const;
  void Record(const std::string& key, const std::string& value) const;
  std::string Require(const std::string& key) const;
  [[noreturn]] void Fail(const std::string& key, const std::string& value,
                         const std::string& rule) const;

  std::string origin_;
  std::string source_text_;
  std::vector<std::string> overrides_;
  std::vector<Entry> entries_;
  mutable std::map<std::string, std::string> unused_;  // NotRead: key -> why it is not read
  mutable std::vector<Entry> resolved_;  // keys asked for, in order, with final values
};

// Parses a number with nothing left over; nullopt if malformed or not finite.
std::optional<double> ParseNumber(const std::string& text);

}  // namespace moeflow::io
