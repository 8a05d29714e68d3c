// moeflow/sweep/sweep.hpp
// Sweeps: one model run at every point of a grid of key values (the Cartesian product of
// `KEY=V1,V2,...` axes, each point a set of model-key overrides), the ODE and/or SGD at each.
//
// Every point is independent and its result self-contained, so sweeps split and merge freely:
//   - finished points are saved one file each (written atomically) in a parts folder as they
//     complete, named by a fingerprint of what determines the run (the model text, the point's
//     overrides, what is run and the seeds);
//   - a sweep first collects the finished points it can find (a previous output file, the parts
//     folder) whose fingerprint matches and runs only the others, so a killed or interrupted
//     sweep resumes by re-running the same command, and parts computed elsewhere (other
//     machines, other shards) are merged by copying them into the parts folder;
//   - a point that fails (bad value, exception) or ends abnormally (diverged, NaN, ...) is
//     recorded with its status and message and does not stop the sweep.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "moeflow/io/model_file.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow {

// One axis of a grid: a model key and its values ("student.experts=2,4,8"; values are split at
// commas outside parentheses, so a link such as "hermite(0,0,1)" is one value).
struct GridAxis {
  std::string key;
  std::vector<std::string> values;
};
// Parses "KEY=V1,V2,...". Throws InputError naming the text and the rule.
GridAxis ParseGridAxis(const std::string& spec);

// A point of the grid: one value per axis, in axis order.
struct SweepPoint {
  std::vector<std::pair<std::string, std::string>> assignments;
  std::string Label() const;  // "k=1, s=2"
};
// The Cartesian product, the first axis varying slowest. Throws InputError for an empty grid
// or a key given twice.
std::vector<SweepPoint> ExpandGrid(const std::vector<GridAxis>& axes);

enum class SweepRun { kFlow, kSgd, kBoth };
const char* ToString(SweepRun run);
SweepRun ParseSweepRun(const std::string& text);  // flow | sgd | both; throws InputError

enum class PointStatus { kOk = 0, kAbnormal = 1, kError = 2 };
const char* ToString(PointStatus status);

struct SweepOptions {
  SweepRun run = SweepRun::kFlow;
  int seeds = 1;            // SGD seeds: seed, seed + 1, ... (model key `seed`)
  int threads = 1;          // points run in parallel; results do not depend on it
  std::string parts_dir;    // finished points are saved here (created if needed); empty: not saved
  std::vector<std::string> previous_files;  // finished points may also be taken from these files
  std::string command_line;  // recorded in every point's run files
  const std::atomic<bool>* interrupt = nullptr;
  // Shard `shard` of `shards` (0-based) runs only the missing points whose grid index i has
  // i % shards == shard; the other points are left to the other shards (machines). Results do
  // not depend on the sharding: merge the shards' parts folders and run without sharding.
  int shard = 0, shards = 1;
  // Check only: build every missing point's model (and validate its [sgd] options when SGD
  // runs) and record kOk or kError with the message; run nothing, save nothing.
  bool dry_run = false;
};

// Parses "I/N" (1 <= I <= N, the I-th of N shards) into 0-based (shard, shards); throws
// InputError naming `key`, the text and the rule.
std::pair<int, int> ParseShard(const std::string& key, const std::string& text);

struct SweepPointResult {
  std::size_t index = 0;  // position in ExpandGrid order
  SweepPoint point;
  PointStatus status = PointStatus::kOk;
  std::string message;    // the error, or the abnormal outcome, with numbers
  bool reused = false;    // taken from a previous file or the parts folder
  // "point_<index>": attributes index, label, fingerprint, status, message; subgroups `flow`
  // and/or `sgd` laid out exactly as a flow file and an sgd file.
  io::Group group;
};

struct SweepResult {
  std::vector<SweepPointResult> points;  // the finished ones, in grid order
  std::size_t total = 0;                 // points in the grid
  std::size_t other_shards = 0;          // points left to other shards (not finished anywhere yet)
  bool interrupted = false;              // stopped by the interrupt flag before every point of this shard ran
  std::size_t Reused() const;
};

// The fingerprint of a point: what decides its result, as text.
std::string PointFingerprint(const io::ModelFile& base, const SweepPoint& point, const SweepOptions& options);

// Runs the missing points of the grid. `on_point` (if set) is called, from the worker threads
// but one call at a time, for every point when it finishes or is found finished.
SweepResult RunSweep(const io::ModelFile& base, const std::vector<GridAxis>& axes, const SweepOptions& options,
                     const std::function<void(const SweepPointResult&, std::size_t done, std::size_t total)>&
                         on_point = {});

}  // namespace moeflow
