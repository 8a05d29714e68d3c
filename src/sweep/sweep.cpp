#include "moeflow/sweep/sweep.hpp"

#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/flow_output.hpp"
#include "moeflow/io/sgd_output.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/compare.hpp"

namespace moeflow {
namespace {

// 64-bit FNV-1a: a stable (platform- and run-independent) name for a fingerprint.
std::string Hash(const std::string& text) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(h));
  return buffer;
}

std::string PointName(std::size_t index) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "point_%04zu", index);
  return buffer;
}

std::string StringAttribute(const io::Group& group, const std::string& name) {
  const auto it = group.attributes.find(name);
  if (it == group.attributes.end()) return "";
  const auto* s = std::get_if<std::string>(&it->second);
  return s != nullptr ? *s : "";
}

// Finished points found in earlier files, by fingerprint. Unreadable files are skipped: a
// finished point is only ever a cache, recomputing it is always correct.
std::map<std::string, io::Group> FinishedPoints(const SweepOptions& options) {
  std::map<std::string, io::Group> found;
  auto add = [&found](io::Group&& group) {
    const std::string fingerprint = StringAttribute(group, "fingerprint");
    if (!fingerprint.empty()) found.emplace(fingerprint, std::move(group));
  };
  for (const std::string& path : options.previous_files) {
    if (!std::filesystem::exists(path)) continue;
    try {
      io::Group root = io::ReadFile(path);
      if (StringAttribute(root, "kind") != "sweep") continue;
      for (io::Group& child : root.groups) {
        if (child.name != "points") continue;
        for (io::Group& g : child.groups) add(std::move(g));
      }
    } catch (const Error&) {
    }
  }
  if (!options.parts_dir.empty() && std::filesystem::is_directory(options.parts_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(options.parts_dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("point_", 0) != 0 || entry.path().extension() != ".h5") continue;
      try {
        add(io::ReadFile(entry.path().string()));
      } catch (const Error&) {
      }
    }
  }
  return found;
}

// Runs one point; nullopt if it was interrupted (then nothing of it is kept).
std::optional<SweepPointResult> RunPoint(const io::ModelFile& base, const SweepPoint& point, std::size_t index,
                                         const SweepOptions& options, int inner_threads) {
  SweepPointResult result;
  result.index = index;
  result.point = point;
  io::Group& group = result.group;
  std::vector<std::string> abnormal;
  try {
    io::ModelFile model = base;
    for (const auto& [key, value] : point.assignments) model.Set(key + "=" + value);
    const FlowSetup setup = BuildFlow(model);
    if (options.dry_run) {
      if (options.run != SweepRun::kFlow) ValidateSgd(setup);
      return result;
    }
    if (options.run != SweepRun::kSgd) {
      IntegrationControl control;
      control.interrupt = options.interrupt;
      Trajectory trajectory;
      std::vector<StageRecord> stages;
      const RunSummary summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events,
                                             setup.stages, &trajectory, &stages, control);
      if (summary.termination == Termination::kInterrupted) return std::nullopt;
      if (!summary.Ok()) abnormal.push_back("flow: " + summary.message);
      io::Group flow = io::FlowResultFile(model, setup, summary, trajectory, stages, options.command_line);
      flow.name = "flow";
      group.groups.push_back(std::move(flow));
    }
    if (options.run != SweepRun::kFlow) {
      SgdControl control;
      control.interrupt = options.interrupt;
      const std::vector<SgdRun> runs = SimulateModelSgd(setup, options.seeds, inner_threads, control);
      for (const SgdRun& r : runs) {
        if (r.summary.termination == Termination::kInterrupted) return std::nullopt;
        if (!r.summary.Ok()) abnormal.push_back("sgd seed " + std::to_string(r.seed) + ": " + r.summary.message);
      }
      io::Group sgd = io::SgdResultFile(model, setup, runs, options.command_line);
      sgd.name = "sgd";
      group.groups.push_back(std::move(sgd));
    }
    if (!abnormal.empty()) {
      result.status = PointStatus::kAbnormal;
      for (const std::string& a : abnormal) result.message += (result.message.empty() ? "" : "; ") + a;
    }
  } catch (const std::exception& e) {
    if (options.interrupt != nullptr && options.interrupt->load()) return std::nullopt;
    group.groups.clear();
    result.status = PointStatus::kError;
    result.message = dynamic_cast<const std::bad_alloc*>(&e) != nullptr
                         ? "out of memory: the point needs more memory than it got (fewer --threads leave each point more)"
                         : e.what();
  }
  return result;
}

void Label(SweepPointResult* result, const std::string& fingerprint) {
  io::Group& g = result->group;
  g.name = PointName(result->index);
  g.attributes["index"] = static_cast<std::int64_t>(result->index);
  g.attributes["label"] = result->point.Label();
  g.attributes["fingerprint"] = fingerprint;
  g.attributes["status"] = static_cast<std::int64_t>(result->status);
  g.attributes["status_name"] = std::string(ToString(result->status));
  g.attributes["message"] = result->message;
  for (const auto& [key, value] : result->point.assignments) g.attributes["grid." + key] = value;
}

}  // namespace

GridAxis ParseGridAxis(const std::string& spec) {
  const auto eq = spec.find('=');
  const std::string rule = "must be KEY=V1,V2,... (e.g. --grid d=100,1000)";
  if (eq == std::string::npos) ThrowBadValue("--grid", spec, rule);
  GridAxis axis;
  axis.key = detail::Trim(spec.substr(0, eq));
  if (axis.key.empty() || axis.key.find_first_of(" \t,") != std::string::npos) {
    ThrowBadValue("--grid", spec, rule + ": the key is empty or malformed");
  }
  const std::string values = spec.substr(eq + 1);
  int depth = 0;
  std::string current;
  auto push = [&]() {
    const std::string v = detail::Trim(current);
    if (v.empty()) ThrowBadValue("--grid", spec, rule + ": an empty value");
    axis.values.push_back(v);
    current.clear();
  };
  for (const char c : values) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      push();
    } else {
      current += c;
    }
  }
  push();
  const std::set<std::string> distinct(axis.values.begin(), axis.values.end());
  if (distinct.size() != axis.values.size()) ThrowBadValue("--grid", spec, "must not repeat a value");
  return axis;
}

std::string SweepPoint::Label() const {
  std::string label;
  for (const auto& [key, value] : assignments) label += (label.empty() ? "" : ", ") + key + "=" + value;
  return label;
}

std::vector<SweepPoint> ExpandGrid(const std::vector<GridAxis>& axes) {
  if (axes.empty()) throw InputError("sweep: give at least one --grid KEY=V1,V2,...");
  std::set<std::string> keys;
  for (const GridAxis& a : axes) {
    if (!keys.insert(a.key).second) ThrowBadValue("--grid", a.key, "must name each key once");
  }
  std::vector<SweepPoint> points(1);
  for (const GridAxis& axis : axes) {
    std::vector<SweepPoint> next;
    for (const SweepPoint& p : points) {
      for (const std::string& v : axis.values) {
        SweepPoint q = p;
        q.assignments.emplace_back(axis.key, v);
        next.push_back(std::move(q));
      }
    }
    points = std::move(next);
  }
  return points;
}

const char* ToString(SweepRun run) {
  switch (run) {
    case SweepRun::kFlow: return "flow";
    case SweepRun::kSgd: return "sgd";
    case SweepRun::kBoth: return "both";
  }
  return "?";
}

SweepRun ParseSweepRun(const std::string& text) {
  for (const SweepRun r : {SweepRun::kFlow, SweepRun::kSgd, SweepRun::kBoth}) {
    if (text == ToString(r)) return r;
  }
  ThrowBadValue("--run", text, "must be one of flow, sgd, both" + detail::DidYouMean(text, {"flow", "sgd", "both"}));
}

const char* ToString(PointStatus status) {
  switch (status) {
    case PointStatus::kOk: return "ok";
    case PointStatus::kAbnormal: return "abnormal";
    case PointStatus::kError: return "error";
  }
  return "?";
}

std::size_t SweepResult::Reused() const {
  std::size_t n = 0;
  for (const SweepPointResult& p : points) n += p.reused ? 1 : 0;
  return n;
}

std::string PointFingerprint(const io::ModelFile& base, const SweepPoint& point, const SweepOptions& options) {
  std::string f = base.SourceText();
  f += "\n# overrides\n";
  for (const std::string& o : base.Overrides()) f += o + "\n";
  for (const auto& [key, value] : point.assignments) f += key + "=" + value + "\n";
  f += "# run = " + std::string(ToString(options.run));
  if (options.run != SweepRun::kFlow) f += ", seeds = " + std::to_string(options.seeds);
  return f + "\n";
}

std::pair<int, int> ParseShard(const std::string& key, const std::string& text) {
  const auto slash = text.find('/');
  const auto i = slash == std::string::npos ? std::nullopt : io::ParseNumber(text.substr(0, slash));
  const auto n = slash == std::string::npos ? std::nullopt : io::ParseNumber(text.substr(slash + 1));
  if (!i || !n || *i != std::floor(*i) || *n != std::floor(*n) || *n < 1 || *i < 1 || *i > *n || *n > 1e6) {
    ThrowBadValue(key, text, "must be I/N with whole numbers 1 <= I <= N (the I-th of N shards), e.g. 2/4");
  }
  return {static_cast<int>(*i) - 1, static_cast<int>(*n)};
}

SweepResult RunSweep(const io::ModelFile& base, const std::vector<GridAxis>& axes, const SweepOptions& options,
                     const std::function<void(const SweepPointResult&, std::size_t, std::size_t)>& on_point) {
  if (options.seeds < 1) ThrowBadValue("--seeds", std::to_string(options.seeds), "must be >= 1");
  if (options.shards < 1 || options.shard < 0 || options.shard >= options.shards) {
    ThrowBadValue("--shard", std::to_string(options.shard + 1) + "/" + std::to_string(options.shards),
                  "must be I/N with 1 <= I <= N");
  }
  const std::vector<SweepPoint> points = ExpandGrid(axes);
  for (const GridAxis& a : axes) {
    for (const std::string& o : base.Overrides()) {
      if (o.substr(0, o.find('=')) == a.key) ThrowBadValue("--grid", a.key, "must not also be given with --set");
    }
  }
  if (!options.parts_dir.empty() && !options.dry_run) std::filesystem::create_directories(options.parts_dir);

  SweepResult result;
  result.total = points.size();
  std::vector<std::optional<SweepPointResult>> finished(points.size());
  std::vector<std::string> fingerprints(points.size());
  std::map<std::string, io::Group> previous = FinishedPoints(options);
  std::mutex mutex;
  std::size_t done = 0;
  auto report = [&](const SweepPointResult& r) {
    const std::lock_guard<std::mutex> lock(mutex);
    ++done;
    if (on_point) on_point(r, done, points.size());
  };

  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < points.size(); ++i) {
    fingerprints[i] = PointFingerprint(base, points[i], options);
    const auto it = previous.find(fingerprints[i]);
    if (it == previous.end()) {
      if (static_cast<int>(i % static_cast<std::size_t>(options.shards)) == options.shard) {
        missing.push_back(i);
      } else {
        ++result.other_shards;
      }
      continue;
    }
    SweepPointResult r;
    r.index = i;
    r.point = points[i];
    r.reused = true;
    r.group = it->second;
    const auto status = r.group.attributes.find("status");
    const auto* code = status == r.group.attributes.end() ? nullptr : std::get_if<std::int64_t>(&status->second);
    r.status = code != nullptr ? static_cast<PointStatus>(*code) : PointStatus::kError;
    r.message = StringAttribute(r.group, "message");
    Label(&r, fingerprints[i]);
    report(r);
    finished[i] = std::move(r);
  }

  const int outer = std::max(1, std::min<int>(options.threads, static_cast<int>(missing.size())));
  const int inner = std::max(1, options.threads / outer);
  ParallelFor(missing.size(), outer, [&](std::size_t m) {
    const std::size_t i = missing[m];
    if (options.interrupt != nullptr && options.interrupt->load()) return;
    std::optional<SweepPointResult> r = RunPoint(base, points[i], i, options, inner);
    if (!r) return;
    Label(&*r, fingerprints[i]);
    if (!options.parts_dir.empty() && !options.dry_run) {
      const std::string path =
          (std::filesystem::path(options.parts_dir) / ("point_" + Hash(fingerprints[i]) + ".h5")).string();
      io::WriteFileAtomically(path, r->group);
    }
    report(*r);
    finished[i] = std::move(r);
  });

  for (std::optional<SweepPointResult>& f : finished) {
    if (f) result.points.push_back(std::move(*f));
  }
  result.interrupted = result.points.size() + result.other_shards != points.size();
  return result;
}

}  // namespace moeflow
