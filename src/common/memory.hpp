// The machine's physical memory, and the check that a run's largest allocations fit in it before
// the run starts: a grid or a training set too large fails at once, naming its key and the
// numbers, instead of as an out-of-memory kill (Linux) long into the run.
#pragma once

#include <cstddef>
#include <string>

namespace moeflow::detail {

// Physical memory in bytes (sysconf); 0 if the system does not say.
double PhysicalMemoryBytes();

// Throws InputError("key 'KEY': value 'VALUE' WHAT needs X GiB, more than this machine's memory
// (Y GiB): ADVICE") if `bytes` exceeds the physical memory (without "value 'VALUE'" if VALUE is
// empty); does nothing if the memory is unknown.
void CheckFitsInMemory(const std::string& key, const std::string& value, const std::string& what, double bytes,
                       const std::string& advice);

// CheckFitsInMemory for a trajectory (moeflow::Trajectory) of `rows` recorded times of
// `values_per_row` values each, naming output.points (the grid's size).
void CheckTrajectoryFitsInMemory(std::size_t rows, std::size_t values_per_row);

}  // namespace moeflow::detail
