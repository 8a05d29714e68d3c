#include "moeflow/models/protocol.hpp"

#include <algorithm>
#include <cmath>

#include "common/text.hpp"

namespace moeflow {

std::vector<double> Prune(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::string& rule,
                          double tolerance, double rms_tolerance, std::string* report) {
  std::vector<double> w = flow.StudentWeights();
  const int units = static_cast<int>(w.size());
  const bool gated = flow.spec().student.HasRouters();
  const Eigen::VectorXd inverse = gram.diagonal().cwiseSqrt().cwiseInverse();
  auto cosine = [&](int a, int b) { return gram(a, b) * inverse[a] * inverse[b]; };
  auto router_close = [&](int i, int j) { return !gated || cosine(units + i, units + j) >= 1.0 - tolerance; };
  std::vector<std::string> removed;
  const bool all = rule == "all";
  if (rule == "cancelling" || rule == "redundant" || all) {
    const std::vector<double> c = flow.spec().student.link->HermiteCoefficients(20);
    bool odd = true;
    for (std::size_t k = 0; k < c.size(); k += 2) odd = odd && std::abs(c[k]) < 1e-12;
    for (int i = 0; i < units && odd; ++i) {
      for (int j = i + 1; j < units && w[i] != 0.0; ++j) {
        if (w[j] == 0.0 || w[i] != w[j] || !router_close(i, j) || cosine(i, j) > -(1.0 - tolerance)) continue;
        removed.push_back("cancelling pair (" + std::to_string(i) + ", " + std::to_string(j) + ")");
        w[i] = w[j] = 0.0;
      }
    }
  }
  if (rule == "duplicates" || rule == "redundant" || all) {
    for (int i = 0; i < units; ++i) {
      for (int j = i + 1; j < units && w[i] != 0.0; ++j) {
        if (w[j] == 0.0 || !router_close(i, j) || cosine(i, j) < 1.0 - tolerance) continue;
        removed.push_back("duplicate " + std::to_string(j) + " merged into " + std::to_string(i));
        w[i] += w[j];
        w[j] = 0.0;
      }
    }
  }
  if (rule == "negligible" || all) {
    // Units whose combined output has an RMS ≤ rms_tolerance: each group of units with the same
    // router (gated; all units' routers within the cosine tolerance of the group's first), then
    // every unit alone. E[(Σ_S a_i φ_i)²] is the second difference of the quadratic R in the
    // weights (TwoLayerFlow::OutputSecondMoment), whatever the backend.
    auto rms = [&](const std::vector<int>& set) {
      std::vector<double> delta(w.size(), 0.0);
      for (int i : set) delta[i] = w[i];
      return std::sqrt(std::max(0.0, flow.WithStudentWeights(w).OutputSecondMoment(delta, gram)));
    };
    auto remove = [&](const std::vector<int>& set, double value, const char* what) {
      std::vector<std::string> names;
      for (int i : set) {
        names.push_back(std::to_string(i));
        w[i] = 0.0;
      }
      removed.push_back(std::string(what) + " (" + detail::Join(names, ", ") + "): output rms " +
                        detail::FormatNumber(value));
    };
    if (gated) {
      std::vector<bool> seen(w.size(), false);
      for (int i = 0; i < units; ++i) {
        if (w[i] == 0.0 || seen[i]) continue;
        std::vector<int> group{i};
        for (int j = i + 1; j < units; ++j) {
          if (w[j] != 0.0 && !seen[j] && router_close(i, j)) group.push_back(j);
        }
        for (int j : group) seen[j] = true;
        if (group.size() < 2) continue;
        const double value = rms(group);
        if (value <= rms_tolerance) remove(group, value, "negligible group");
      }
    }
    for (int i = 0; i < units; ++i) {
      if (w[i] == 0.0) continue;
      const double value = rms({i});
      if (value <= rms_tolerance) remove({i}, value, "negligible unit");
    }
  }
  *report = removed.empty() ? "nothing" : detail::Join(removed, ", ");
  return w;
}

Stage WholeRunStage(const TwoLayerSpec& spec) {
  Stage all;
  all.learning_rate = spec.learning_rate;
  all.router_learning_rate = spec.router_learning_rate;
  all.weight_learning_rate = spec.weight_learning_rate;
  return all;
}

TwoLayerFlow StageModel(const TwoLayerFlow& current, const Stage& stage, const Eigen::MatrixXd& gram,
                        std::string* pruned) {
  pruned->clear();
  const TwoLayerFlow pruned_model =
      stage.prune == "none"
          ? current
          : current.WithStudentWeights(
                Prune(current, gram, stage.prune, stage.prune_tolerance, stage.prune_rms, pruned));
  return pruned_model.WithLearningRates(stage.learning_rate, stage.router_learning_rate, stage.weight_learning_rate);
}

RunSummary RunProtocol(const TwoLayerFlow& flow, const Eigen::VectorXd& x0, const IntegratorOptions& options,
                       const std::vector<EventSpec>& events, const std::vector<Stage>& stages,
                       Trajectory* trajectory, std::vector<StageRecord>* records, const IntegrationControl& control) {
  RunSummary total;
  total.events.resize(events.size());
  for (std::size_t e = 0; e < events.size(); ++e) total.events[e].spec = events[e];
  trajectory->observables = flow.Observables();
  records->clear();
  Eigen::VectorXd x = x0;
  double t = 0.0;
  TwoLayerFlow current = flow;  // the model of the current stage (its weights carry pruning on)
  total.termination = Termination::kReachedEnd;
  total.message = "reached t_end = " + detail::FormatNumber(options.t_end);
  for (std::size_t s = 0; s < stages.size(); ++s) {
    const Stage& stage = stages[s];
    StageRecord record{stage.name, t, t, "", ""};
    // A stage whose `until` event has already happened is empty.
    bool already = false;
    for (const EventRecord& e : total.events) already = already || (e.spec.name == stage.until && e.occurred);
    if (already) {
      record.ended_by = "event " + stage.until + " (already happened)";
      records->push_back(record);
      continue;
    }
    // Trained weights live in the state: the stage (and its pruning) starts from them, and the
    // pruned ones go back into the state.
    current = StageModel(current.AtState(x), stage, flow.Unpack(x), &record.pruned);
    if (flow.spec().trained_weights) x = current.Pack(flow.Unpack(x));
    IntegratorOptions o = options;
    const double length = std::min(stage.duration, options.t_end - t);
    o.t_end = length;
    o.output_times.clear();
    for (double g : options.output_times) {
      if (g > t && g <= t + length) o.output_times.push_back(std::min(g - t, length));
    }
    std::vector<EventSpec> stage_events;  // the events not yet seen, `until` made a stop rule
    std::vector<std::size_t> index;
    for (std::size_t e = 0; e < events.size(); ++e) {
      if (total.events[e].occurred) continue;
      EventSpec spec = events[e];
      if (spec.name == stage.until) spec.stop = true;
      stage_events.push_back(spec);
      index.push_back(e);
    }
    Trajectory part;
    const RunSummary summary = Integrate(current, x, o, stage_events, &part, control);
    for (std::size_t r = (s == 0 ? 0 : 1); r < part.time.size(); ++r) {
      trajectory->time.push_back(t + part.time[r]);
      trajectory->values.push_back(part.values[r]);
    }
    bool global_stop = false, until_hit = false;
    for (std::size_t i = 0; i < stage_events.size(); ++i) {
      const EventRecord& e = summary.events[i];
      if (!e.occurred) continue;
      EventRecord& out = total.events[index[i]];
      out.occurred = true;
      out.time = t + e.time;
      out.value = e.value;
      if (summary.termination == Termination::kStoppedOnEvent && e.time == summary.t_final) {
        global_stop = global_stop || events[index[i]].stop;
        until_hit = until_hit || events[index[i]].name == stage.until;
      }
    }
    total.accepted_steps += summary.accepted_steps;
    total.rejected_steps += summary.rejected_steps;
    total.drift_evaluations += summary.drift_evaluations;
    total.wall_seconds += summary.wall_seconds;
    t += summary.t_final;
    x = summary.final_state;
    record.t_end = t;
    total.t_final = t;
    total.final_state = x;
    if (!summary.Ok()) {
      record.ended_by = ToString(summary.termination);
      records->push_back(record);
      total.termination = summary.termination;
      // The stage's integration counts time from the stage's start.
      total.message = stages.size() == 1 ? summary.message
                                         : "stage '" + stage.name + "' (started at t = " +
                                               detail::FormatNumber(record.t_start) + "; times from its start): " +
                                               summary.message;
      return total;
    }
    if (global_stop) {
      record.ended_by = "stop event";
      records->push_back(record);
      total.termination = Termination::kStoppedOnEvent;
      total.message = stages.size() == 1 ? summary.message
                                         : "stopped on event at t = " + detail::FormatNumber(t) + " (stage '" +
                                               stage.name + "')";
      return total;
    }
    record.ended_by = until_hit ? "event " + stage.until : (t >= options.t_end ? "t_end" : "duration");
    records->push_back(record);
    if (t >= options.t_end) break;
  }
  return total;
}

}  // namespace moeflow
