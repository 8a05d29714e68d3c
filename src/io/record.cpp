#include "moeflow/io/record.hpp"

#include <sstream>

namespace moeflow::io {

Group& Group::Subgroup(const std::string& child) {
  for (Group& g : groups) {
    if (g.name == child) return g;
  }
  groups.push_back(Group{});
  groups.back().name = child;
  return groups.back();
}

const Group* Group::FindGroup(const std::string& path) const {
  const Group* current = this;
  std::stringstream parts(path);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    const Group* next = nullptr;
    for (const Group& g : current->groups) {
      if (g.name == part) next = &g;
    }
    if (next == nullptr) return nullptr;
    current = next;
  }
  return current;
}

const Dataset* Group::FindDataset(const std::string& path) const {
  const auto slash = path.rfind('/');
  const Group* parent = slash == std::string::npos ? this : FindGroup(path.substr(0, slash));
  const std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
  if (parent == nullptr) return nullptr;
  for (const Dataset& d : parent->datasets) {
    if (d.name == leaf) return &d;
  }
  return nullptr;
}

}  // namespace moeflow::io
