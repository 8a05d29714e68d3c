#include "common/memory.hpp"

#include <unistd.h>

#include "common/text.hpp"
#include "moeflow/error.hpp"

namespace moeflow::detail {

double PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return 0.0;
  return static_cast<double>(pages) * static_cast<double>(page_size);
}

void CheckFitsInMemory(const std::string& key, const std::string& value, const std::string& what, double bytes,
                       const std::string& advice) {
  const double memory = PhysicalMemoryBytes();
  if (memory <= 0.0 || bytes <= memory) return;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  const std::string subject = value.empty() ? what : "value '" + value + "' " + what;
  throw InputError("key '" + key + "': " + subject + " needs " + FormatNumber(bytes / kGiB, 3) +
                   " GiB, more than this machine's memory (" + FormatNumber(memory / kGiB, 3) + " GiB): " + advice);
}

void CheckTrajectoryFitsInMemory(std::size_t rows, std::size_t values_per_row) {
  // A row: its time, its values, and the vector holding them (object and allocation header).
  const double row_bytes = 8.0 * (static_cast<double>(values_per_row) + 1.0) + 48.0;
  CheckFitsInMemory("output.points", "",
                    "a trajectory of " + std::to_string(rows) + " rows of " + std::to_string(values_per_row) + " values",
                    static_cast<double>(rows) * row_bytes, "lower output.points");
}

}  // namespace moeflow::detail
