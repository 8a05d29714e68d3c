// moeflow/io/record.hpp
// An in-memory tree of groups, datasets and attributes: what a moeflow result file holds.
// Runs build a Group; WriteFileAtomically turns it into an HDF5 file. No HDF5 type appears
// in this header (the HDF5 code lives in src/io/).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace moeflow::io {

using AttributeValue = std::variant<std::string, double, std::int64_t, std::vector<double>>;
using Attributes = std::map<std::string, AttributeValue>;

struct Dataset {
  std::string name;
  std::vector<std::size_t> shape;  // row-major extents; empty for a scalar
  std::vector<double> data;        // product(shape) values (one for a scalar)
  Attributes attributes;
};

struct Group {
  std::string name;  // empty for the root
  Attributes attributes;
  std::vector<Dataset> datasets;
  std::vector<Group> groups;

  // The child group called `child`, added if absent.
  Group& Subgroup(const std::string& child);
  // The dataset or group at a '/'-separated path relative to this group, or nullptr.
  const Dataset* FindDataset(const std::string& path) const;
  const Group* FindGroup(const std::string& path) const;
};

// Writes `root` as an HDF5 file at `path`: first to a temporary file in the same folder,
// then renamed over `path`, so a failure or a crash never leaves a partial file at `path`
// and never touches an existing one. Datasets of rank >= 1 are chunked along their first
// axis and deflate-compressed. Throws moeflow::Error on failure (the temporary is removed). If
// `path` cannot be written (its folder removed or full since CheckWritable), the same file is
// written to a new file in $TMPDIR (else /tmp), and the error says "... the result is saved in
// 'RESCUE' instead": a long run's result is not lost.
void WriteFileAtomically(const std::string& path, const Group& root);

// Checks, before a run, that WriteFileAtomically will be able to write `path` when it ends: `path`
// names a file (not a folder) in an existing folder that takes a new file (a probe temporary is
// created there and removed), and an existing file there is empty or of the kind written (its
// first bytes are `signature`: moeflow replaces its own results, never a model file or notes
// given by mistake). Throws InputError("key 'KEY': value 'PATH' ...") naming the rule that fails,
// so a long run is not lost to a mistyped output folder.
inline constexpr char kHdf5Signature[] = "\x89HDF\r\n\x1a\n";
inline constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";
void CheckWritable(const std::string& key, const std::string& path, const std::string& signature = kHdf5Signature,
                   const std::string& kind = "HDF5");

// Reads a whole HDF5 file (groups, float/integer datasets, string and numeric attributes).
// Throws InputError for a path that is missing or not an HDF5 file, Error if reading fails.
Group ReadFile(const std::string& path);

// A readable summary of a file: attributes, datasets with shapes, events.
std::string Describe(const Group& root);

}  // namespace moeflow::io
