// The only file that uses the HDF5 C++ API: Group trees to and from HDF5 files.
#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>

#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow::io {
namespace {

constexpr std::size_t kChunkBytes = 64 * 1024;  // target size of a dataset chunk
constexpr int kDeflateLevel = 4;

// The HDF5 library of a distribution need not be built thread-safe: every call into it from
// this file holds this lock (sweeps write finished points from several threads).
std::mutex& Hdf5Lock() {
  static std::mutex lock;
  return lock;
}

std::size_t Elements(const std::vector<std::size_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), std::size_t{1}, std::multiplies<>());
}

H5::StrType Utf8StringType() {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  return type;
}

void WriteAttribute(H5::H5Object& object, const std::string& name, const AttributeValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) {
    const H5::StrType type = Utf8StringType();
    H5::Attribute a = object.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
    a.write(type, *s);
  } else if (const auto* d = std::get_if<double>(&value)) {
    H5::Attribute a = object.createAttribute(name, H5::PredType::NATIVE_DOUBLE, H5::DataSpace(H5S_SCALAR));
    a.write(H5::PredType::NATIVE_DOUBLE, d);
  } else if (const auto* i = std::get_if<std::int64_t>(&value)) {
    H5::Attribute a = object.createAttribute(name, H5::PredType::NATIVE_INT64, H5::DataSpace(H5S_SCALAR));
    a.write(H5::PredType::NATIVE_INT64, i);
  } else if (const auto* v = std::get_if<std::vector<double>>(&value)) {
    const hsize_t n = v->size();
    H5::Attribute a = object.createAttribute(name, H5::PredType::NATIVE_DOUBLE, H5::DataSpace(1, &n));
    if (n > 0) a.write(H5::PredType::NATIVE_DOUBLE, v->data());
  }
}

void WriteDataset(H5::Group& parent, const Dataset& ds) {
  if (ds.data.size() != Elements(ds.shape)) {
    throw Error("dataset '" + ds.name + "' has " + std::to_string(ds.data.size()) +
                " values but its shape holds " + std::to_string(Elements(ds.shape)));
  }
  std::vector<hsize_t> dims(ds.shape.begin(), ds.shape.end());
  const H5::DataSpace space = dims.empty() ? H5::DataSpace(H5S_SCALAR)
                                           : H5::DataSpace(static_cast<int>(dims.size()), dims.data());
  H5::DSetCreatPropList properties;
  if (!dims.empty() && !ds.data.empty()) {
    std::vector<hsize_t> chunk = dims;
    const std::size_t row = std::max<std::size_t>(1, Elements(ds.shape) / ds.shape[0]);
    chunk[0] = std::clamp<hsize_t>(kChunkBytes / (sizeof(double) * row), 1, dims[0]);
    properties.setChunk(static_cast<int>(chunk.size()), chunk.data());
    properties.setShuffle();
    properties.setDeflate(kDeflateLevel);
  }
  H5::DataSet dataset = parent.createDataSet(ds.name, H5::PredType::NATIVE_DOUBLE, space, properties);
  if (!ds.data.empty()) dataset.write(ds.data.data(), H5::PredType::NATIVE_DOUBLE);
  for (const auto& [name, value] : ds.attributes) WriteAttribute(dataset, name, value);
}

void WriteGroup(H5::Group& target, const Group& group) {
  std::set<std::string> names;
  auto claim = [&](const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos || !names.insert(name).second) {
      throw Error("invalid or repeated name '" + name + "' in group '" + group.name + "'");
    }
  };
  for (const auto& [name, value] : group.attributes) WriteAttribute(target, name, value);
  for (const Dataset& ds : group.datasets) {
    claim(ds.name);
    WriteDataset(target, ds);
  }
  for (const Group& child : group.groups) {
    claim(child.name);
    H5::Group g = target.createGroup(child.name);
    WriteGroup(g, child);
  }
}

AttributeValue ReadAttribute(const H5::Attribute& a) {
  const H5T_class_t type_class = a.getTypeClass();
  const hssize_t n = a.getSpace().getSimpleExtentNpoints();
  if (type_class == H5T_STRING) {
    std::string s;
    a.read(a.getStrType(), s);
    return s;
  }
  if (type_class == H5T_INTEGER && n == 1) {
    std::int64_t i = 0;
    a.read(H5::PredType::NATIVE_INT64, &i);
    return i;
  }
  if (type_class == H5T_FLOAT || type_class == H5T_INTEGER) {
    std::vector<double> v(static_cast<std::size_t>(n));
    if (n > 0) a.read(H5::PredType::NATIVE_DOUBLE, v.data());
    if (n == 1 && a.getSpace().getSimpleExtentNdims() == 0) return v[0];
    return v;
  }
  return std::string("<attribute of an unsupported HDF5 type>");
}

Attributes ReadAttributes(const H5::H5Object& object) {
  Attributes attributes;
  const int n = object.getNumAttrs();
  for (int i = 0; i < n; ++i) {
    const H5::Attribute a = object.openAttribute(static_cast<unsigned>(i));
    attributes[a.getName()] = ReadAttribute(a);
  }
  return attributes;
}

Group ReadGroup(const H5::Group& source, const std::string& name) {
  Group group;
  group.name = name;
  group.attributes = ReadAttributes(source);
  for (hsize_t i = 0; i < source.getNumObjs(); ++i) {
    const std::string child = source.getObjnameByIdx(i);
    const H5G_obj_t type = source.getObjTypeByIdx(i);
    if (type == H5G_GROUP) {
      group.groups.push_back(ReadGroup(source.openGroup(child), child));
    } else if (type == H5G_DATASET) {
      const H5::DataSet dataset = source.openDataSet(child);
      Dataset ds;
      ds.name = child;
      const H5::DataSpace space = dataset.getSpace();
      std::vector<hsize_t> dims(static_cast<std::size_t>(space.getSimpleExtentNdims()));
      if (!dims.empty()) space.getSimpleExtentDims(dims.data());
      ds.shape.assign(dims.begin(), dims.end());
      ds.attributes = ReadAttributes(dataset);
      const H5T_class_t type_class = dataset.getTypeClass();
      if (type_class == H5T_FLOAT || type_class == H5T_INTEGER) {
        ds.data.resize(Elements(ds.shape));
        if (!ds.data.empty()) dataset.read(ds.data.data(), H5::PredType::NATIVE_DOUBLE);
      } else {
        ds.attributes["note"] = std::string("not numeric: values not read");
      }
      group.datasets.push_back(std::move(ds));
    }
  }
  return group;
}

std::string TemporaryPathFor(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path target(path);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::string name = ".";
  name.append(target.filename().string()).append(".tmp-").append(std::to_string(getpid()));
  name.append("-").append(std::to_string(counter++));
  return (dir / name).string();
}

std::string Shape(const std::vector<std::size_t>& shape) {
  if (shape.empty()) return "scalar";
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? " x " : "") + std::to_string(shape[i]);
  return s + ")";
}

std::string Show(const AttributeValue& value, const std::string& indent) {
  std::ostringstream os;
  os << std::setprecision(10);
  if (const auto* s = std::get_if<std::string>(&value)) {
    if (s->find('\n') == std::string::npos) return *s;
    std::istringstream lines(*s);
    std::string line;
    os << "\n";
    while (std::getline(lines, line)) os << indent << line << "\n";
    std::string out = os.str();
    out.pop_back();
    return out;
  }
  if (const auto* d = std::get_if<double>(&value)) os << *d;
  if (const auto* i = std::get_if<std::int64_t>(&value)) os << *i;
  if (const auto* v = std::get_if<std::vector<double>>(&value)) {
    os << "[";
    for (std::size_t k = 0; k < v->size(); ++k) os << (k ? ", " : "") << (*v)[k];
    os << "]";
  }
  return os.str();
}

void DescribeDatasets(const Group& group, const std::string& path, std::ostream& os) {
  for (const Dataset& ds : group.datasets) {
    os << "  " << std::left << std::setw(32) << path + ds.name << " " << Shape(ds.shape);
    if (const auto it = ds.attributes.find("description"); it != ds.attributes.end()) {
      os << "  " << Show(it->second, "");
    }
    os << "\n";
  }
  for (const Group& child : group.groups) DescribeDatasets(child, path + child.name + "/", os);
}

// Writes `root` to a temporary beside `path`, then renames it over `path`. Throws Error with
// the reason (not yet naming `path`); the temporary is removed. The caller holds Hdf5Lock().
void WriteThroughTemporary(const std::string& path, const Group& root) {
  const std::string temporary = TemporaryPathFor(path);
  try {
    {
      H5::H5File file(temporary, H5F_ACC_EXCL);
      H5::Group top = file.openGroup("/");
      WriteGroup(top, root);
    }
    if (std::rename(temporary.c_str(), path.c_str()) != 0) {
      const int error = errno;
      throw Error("cannot rename the finished file to '" + path + "': " + std::strerror(error));
    }
  } catch (const H5::Exception& e) {
    std::remove(temporary.c_str());
    throw Error("HDF5 error in " + e.getFuncName() + ": " + e.getDetailMsg());
  } catch (const Error&) {
    std::remove(temporary.c_str());
    throw;
  }
}

// A new file in the system's temporary folder ($TMPDIR, else /tmp) named after `path`; empty if
// that folder does not exist.
std::string RescuePathFor(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  if (ec) return {};
  const std::string name = "moeflow-rescue-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
                           std::filesystem::path(path).filename().string();
  return (dir / name).string();
}

}  // namespace

void WriteFileAtomically(const std::string& path, const Group& root) {
  const std::lock_guard<std::mutex> lock(Hdf5Lock());
  H5::Exception::dontPrint();
  try {
    WriteThroughTemporary(path, root);
  } catch (const Error& e) {
    const std::string failure = "cannot write '" + path + "': " + e.what();
    // The result of a long run must not be lost to a folder removed or a disk filled during it.
    const std::string rescue = RescuePathFor(path);
    if (rescue.empty()) throw Error(failure);
    try {
      WriteThroughTemporary(rescue, root);
    } catch (const Error&) {
      throw Error(failure);  // e.g. data that cannot be written anywhere, or no room in either place
    }
    throw Error(failure + "; the result is saved in '" + rescue + "' instead");
  }
}

void CheckWritable(const std::string& key, const std::string& path, const std::string& signature,
                   const std::string& kind) {
  const std::filesystem::path target(path);
  std::error_code ec;
  if (path.empty() || !target.has_filename() || std::filesystem::is_directory(target, ec)) {
    ThrowBadValue(key, path, "must name a file, not a folder");
  }
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  if (!std::filesystem::exists(dir, ec)) {
    std::string why = "does not exist";
    if (ec) {  // the lookup itself failed, e.g. a parent that cannot be searched
      why = "cannot be reached: " + ec.message();
    } else {  // name the nearest existing parent if it is not a folder
      std::filesystem::path up = dir;
      while (up.has_parent_path() && up != up.parent_path() && !std::filesystem::exists(up, ec)) up = up.parent_path();
      if (std::filesystem::exists(up, ec) && !std::filesystem::is_directory(up, ec)) {
        why += " ('" + up.string() + "' is not a folder)";
      }
    }
    ThrowBadValue(key, path, "must be in an existing folder: '" + dir.string() + "' " + why);
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    ThrowBadValue(key, path, "must be in a folder: '" + dir.string() + "' is not one");
  }
  if (std::filesystem::exists(target, ec) && std::filesystem::file_size(target, ec) > 0 && !ec) {
    std::ifstream in(path, std::ios::binary);
    std::string head(signature.size(), '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    if (!in || head != signature) {
      ThrowBadValue(key, path,
                    "is an existing non-" + kind + " file (the model file? notes?): moeflow replaces only " + kind +
                        " files; choose another path, or remove that file first");
    }
  }
  const std::string probe = TemporaryPathFor(path);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    const int error = errno;
    ThrowBadValue(key, path, "must be in a folder that takes a new file: '" + dir.string() + "': " + std::strerror(error));
  }
  ::close(fd);
  std::remove(probe.c_str());
}

Group ReadFile(const std::string& path) {
  const std::lock_guard<std::mutex> lock(Hdf5Lock());
  H5::Exception::dontPrint();
  if (!std::filesystem::exists(path)) throw InputError("cannot read '" + path + "': no such file");
  try {
    if (!H5::H5File::isHdf5(path)) throw InputError("cannot read '" + path + "': not an HDF5 file");
    const H5::H5File file(path, H5F_ACC_RDONLY);
    return ReadGroup(file.openGroup("/"), "");
  } catch (const H5::Exception& e) {
    throw Error("cannot read '" + path + "': HDF5 error in " + e.getFuncName() + ": " + e.getDetailMsg());
  }
}

std::string Describe(const Group& root) {
  std::ostringstream os;
  os << "attributes:\n";
  for (const auto& [name, value] : root.attributes) os << "  " << name << ": " << Show(value, "    | ") << "\n";
  os << "datasets:\n";
  DescribeDatasets(root, "/", os);
  if (const Group* events = root.FindGroup("events"); events != nullptr && !events->datasets.empty()) {
    os << "events:\n";
    for (const Dataset& e : events->datasets) {
      os << "  " << e.name << ": t = " << Show(e.data.empty() ? AttributeValue(std::string("?")) : AttributeValue(e.data[0]), "");
      for (const auto& [name, value] : e.attributes) os << "  " << name << " = " << Show(value, "");
      os << "\n";
    }
  }
  return os.str();
}

}  // namespace moeflow::io
