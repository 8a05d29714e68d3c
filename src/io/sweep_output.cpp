#include "moeflow/io/sweep_output.hpp"

#include <cmath>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/io/flow_output.hpp"
#include "moeflow/sgd/statistics.hpp"
#include "moeflow/version.hpp"

namespace moeflow::io {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Last(const Group& group, const std::string& path) {
  const Dataset* ds = group.FindDataset(path);
  return ds != nullptr && !ds->data.empty() ? ds->data.back() : kNaN;
}

// The median over the seeds of an sgd group of the last value of trajectory/<name>; NaN if
// no seed records it.
double SgdFinalMedian(const Group& sgd, const std::string& name) {
  std::vector<double> values;
  for (const Group& seed : sgd.groups) {
    if (seed.name.rfind("seed_", 0) != 0) continue;
    if (seed.FindDataset("trajectory/" + name) != nullptr) values.push_back(Last(seed, "trajectory/" + name));
  }
  if (values.empty()) return kNaN;
  return Summarise(values).median;
}

struct Column {
  std::string name;
  std::vector<double> values;
  Attributes attributes;
};

// Event names in first-appearance order over the points' `<run>/<events group>`.
std::vector<std::string> EventNames(const SweepResult& result, const std::string& path) {
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const SweepPointResult& p : result.points) {
    if (const Group* g = p.group.FindGroup(path)) {
      for (const Dataset& ds : g->datasets) {
        if (seen.insert(ds.name).second) names.push_back(ds.name);
      }
    }
  }
  return names;
}

std::vector<Column> Table(const std::vector<GridAxis>& axes, const SweepResult& result) {
  std::vector<Column> columns;
  const std::size_t rows = result.points.size();
  auto column = [&](const std::string& name, auto&& value) {
    Column c{name, {}, {}};
    for (const SweepPointResult& p : result.points) c.values.push_back(value(p));
    columns.push_back(std::move(c));
  };
  column("index", [](const SweepPointResult& p) { return static_cast<double>(p.index); });
  for (std::size_t a = 0; a < axes.size(); ++a) {
    bool numeric = true;
    for (const std::string& v : axes[a].values) numeric = numeric && ParseNumber(v).has_value();
    Column c{axes[a].key, {}, {}};
    for (const SweepPointResult& p : result.points) {
      const std::string& v = p.point.assignments[a].second;
      if (numeric) {
        c.values.push_back(*ParseNumber(v));
      } else {
        std::size_t k = 0;
        while (axes[a].values[k] != v) ++k;
        c.values.push_back(static_cast<double>(k));
      }
    }
    if (!numeric) c.attributes["values"] = detail::Join(axes[a].values, "\n");
    columns.push_back(std::move(c));
  }
  column("status", [](const SweepPointResult& p) { return static_cast<double>(p.status); });
  columns.back().attributes["legend"] = std::string("0 ok, 1 ended abnormally, 2 error (see /points/point_<i>)");
  auto has = [&](const std::string& path) {
    for (const SweepPointResult& p : result.points) {
      if (p.group.FindGroup(path) != nullptr) return true;
    }
    return false;
  };
  if (has("flow")) {
    column("flow_final_risk", [](const SweepPointResult& p) { return Last(p.group, "flow/trajectory/risk"); });
    column("flow_t_final", [](const SweepPointResult& p) { return Last(p.group, "flow/trajectory/time"); });
    for (const std::string& e : EventNames(result, "flow/events")) {
      column("flow_event_" + e, [&e](const SweepPointResult& p) {
        const Dataset* ds = p.group.FindDataset("flow/events/" + e);
        return ds != nullptr && !ds->data.empty() ? ds->data[0] : kNaN;
      });
    }
  }
  if (has("sgd")) {
    for (const char* name : {"risk", "train_risk", "test_risk_empirical"}) {
      const std::string column_name = std::string("sgd_final_") + (std::string(name) == "test_risk_empirical" ? "test_risk" : name);
      column(column_name, [name](const SweepPointResult& p) {
        const Group* sgd = p.group.FindGroup("sgd");
        return sgd != nullptr ? SgdFinalMedian(*sgd, name) : kNaN;
      });
      bool any = false;
      for (const double v : columns.back().values) any = any || !std::isnan(v);
      if (!any && std::string(name) != "risk") columns.pop_back();
    }
    for (const std::string& e : EventNames(result, "sgd/event_statistics")) {
      column("sgd_event_" + e, [&e](const SweepPointResult& p) {
        const Dataset* ds = p.group.FindDataset("sgd/event_statistics/" + e);
        return ds != nullptr && !ds->data.empty() ? ds->data[0] : kNaN;
      });
    }
  }
  for (Column& c : columns) c.values.resize(rows);
  return columns;
}

std::string GridText(const std::vector<GridAxis>& axes) {
  std::vector<std::string> lines;
  for (const GridAxis& a : axes) lines.push_back(a.key + "=" + detail::Join(a.values, ","));
  return detail::Join(lines, "\n");
}

}  // namespace

Group SweepResultFile(const ModelFile& base, const std::vector<GridAxis>& axes, const SweepOptions& options,
                      const SweepResult& result) {
  Group root;
  root.attributes = {
      {"kind", std::string("sweep")},
      {"model", base.SourceText()},
      {"model_file", base.Origin()},
      {"overrides", detail::Join(base.Overrides(), "\n")},
      {"grid", GridText(axes)},
      {"run", std::string(ToString(options.run))},
      {"seeds", static_cast<std::int64_t>(options.seeds)},
      {"points", static_cast<std::int64_t>(result.total)},
      {"command", options.command_line},
      {"version", std::string(Version())},
      {"created", NowIso8601()},
  };
  Group& table = root.Subgroup("table");
  for (Column& c : Table(axes, result)) {
    table.datasets.push_back({c.name, {c.values.size()}, std::move(c.values), std::move(c.attributes)});
  }
  Group& points = root.Subgroup("points");
  for (const SweepPointResult& p : result.points) points.groups.push_back(p.group);
  return root;
}

std::string SweepReport(const std::vector<GridAxis>& axes, const SweepResult& result) {
  const std::vector<Column> columns = Table(axes, result);
  std::ostringstream os;
  os << "points:   " << result.points.size() << " of " << result.total << " (" << result.Reused()
     << " taken from earlier runs)\n";
  std::vector<std::size_t> widths;
  for (const Column& c : columns) widths.push_back(std::max<std::size_t>(c.name.size(), 10) + 2);
  for (std::size_t j = 0; j < columns.size(); ++j) {
    os << std::setw(static_cast<int>(widths[j])) << columns[j].name;
  }
  os << "\n";
  for (std::size_t i = 0; i < result.points.size(); ++i) {
    for (std::size_t j = 0; j < columns.size(); ++j) {
      std::string cell;
      if (j >= 1 && j <= axes.size()) {
        cell = result.points[i].point.assignments[j - 1].second;
      } else if (columns[j].name == "status") {
        cell = ToString(result.points[i].status);
      } else {
        cell = detail::FormatNumber(columns[j].values[i], 6);
      }
      os << std::setw(static_cast<int>(widths[j])) << cell;
    }
    os << "\n";
  }
  for (const SweepPointResult& p : result.points) {
    if (p.status != PointStatus::kOk) os << ToString(p.status) << " at " << p.point.Label() << ": " << p.message << "\n";
  }
  return os.str();
}

}  // namespace moeflow::io
