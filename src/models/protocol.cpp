#include "moeflow/models/protocol.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Eigenvalues>

#include "common/text.hpp"
#include "models/rank_one.hpp"
#include "moeflow/error.hpp"

namespace moeflow {

namespace {

// "i, j, k": unit indices for the report.
std::string Names(const std::vector<int>& set) {
  std::vector<std::string> out;
  for (int i : set) out.push_back(std::to_string(i));
  return detail::Join(out, ", ");
}

// The span of the vectors `members` (indices into gram), G = E Λ Eᵀ their Gram matrix: their
// coordinates y = Λ^(1/2) Eᵀ over the eigenvalues above round-off, and for a vector u given in those
// coordinates the coefficients α = E Λ^(−1/2) u with Σ_j α_j u_j = u.
struct Span {
  Eigen::MatrixXd y;       // r × members
  Eigen::MatrixXd to_alpha;  // members × r: α = to_alpha · u
};
Span SpanOf(const Eigen::MatrixXd& gram, const std::vector<int>& members) {
  const Eigen::Index g = static_cast<Eigen::Index>(members.size());
  Eigen::MatrixXd sub(g, g);
  for (Eigen::Index i = 0; i < g; ++i) {
    for (Eigen::Index j = 0; j < g; ++j) sub(i, j) = gram(members[i], members[j]);
  }
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(sub);
  const double floor = 1e-12 * std::max(1.0, eigen.eigenvalues().maxCoeff());
  std::vector<Eigen::Index> kept;
  for (Eigen::Index i = 0; i < g; ++i) {
    if (eigen.eigenvalues()[i] > floor) kept.push_back(i);
  }
  Span span{Eigen::MatrixXd(kept.size(), g), Eigen::MatrixXd(g, kept.size())};
  for (std::size_t c = 0; c < kept.size(); ++c) {
    const double root = std::sqrt(eigen.eigenvalues()[kept[c]]);
    span.y.row(c) = root * eigen.eigenvectors().col(kept[c]).transpose();
    span.to_alpha.col(c) = eigen.eigenvectors().col(kept[c]) / root;
  }
  return span;
}

// Unit-norm combination coefficients: α / ‖Σ_j α_j u_j‖.
Eigen::VectorXd UnitCombination(const Eigen::MatrixXd& gram, const std::vector<int>& members, Eigen::VectorXd alpha) {
  double norm2 = 0.0;
  for (std::size_t i = 0; i < members.size(); ++i) {
    for (std::size_t j = 0; j < members.size(); ++j) norm2 += alpha[i] * alpha[j] * gram(members[i], members[j]);
  }
  return alpha / std::sqrt(norm2);
}

// The merge rule of Prune on `groups` (units sharing a router): each group one unit when that
// changes the output RMS by at most rms_tolerance. Updates the weights w and the student-vector
// transform (created on the first merge), and adds a report line per group.
void MergeGroups(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::vector<std::vector<int>>& groups,
                 double rms_tolerance, std::vector<double>* weights, Eigen::MatrixXd* transform,
                 std::vector<std::string>* removed) {
  std::vector<double>& w = *weights;
  const int units = static_cast<int>(w.size());
  // The link's lowest Hermite order k ≥ 1: the merged unit reproduces the group's order-k tensor.
  const std::vector<double> coefficients = flow.spec().student.link->HermiteCoefficients(20);
  double largest = 0.0;
  for (double c : coefficients) largest = std::max(largest, std::abs(c));
  int order = 1;
  while (order + 1 < static_cast<int>(coefficients.size()) && std::abs(coefficients[order]) <= 1e-12 * largest) ++order;
  // The model with one more unit, to measure the difference of the two outputs exactly: student
  // vectors (experts, then routers) with the candidate's appended to each, then the fixed ones.
  TwoLayerSpec wider_spec = flow.spec();
  wider_spec.student.units += 1;
  wider_spec.trained_weights = false;
  wider_spec.student_weights = w;
  wider_spec.student_weights.push_back(0.0);
  const TwoLayerFlow wider(wider_spec);
  const int n = flow.vectors();
  Eigen::MatrixXd embed = Eigen::MatrixXd::Zero(n + 2, n);  // wider vectors from the model's
  for (int a = 0; a < n; ++a) embed(a < units ? a : (a < 2 * units ? a + 1 : a + 2), a) = 1.0;
  for (const std::vector<int>& group : groups) {
    std::vector<int> experts = group, routers;
    for (int j : group) routers.push_back(units + j);
    const Span span = SpanOf(gram, experts);
    if (span.y.rows() == 0) continue;
    Eigen::VectorXd a(static_cast<Eigen::Index>(group.size()));
    for (std::size_t j = 0; j < group.size(); ++j) a[j] = w[group[j]];
    auto [c, u] = RankOnePart(span.y, a, order);
    // Trained second-layer weights: the unit takes weight c. Fixed ones: it keeps its own (the
    // model's class), with u's sign matching it for odd k; the difference counts in the check.
    double weight = c;
    if (!flow.spec().trained_weights) {
      weight = w[group.front()];
      if (order % 2 == 1 && weight * c < 0) u = -u;
    }
    const Eigen::VectorXd alpha = UnitCombination(gram, experts, span.to_alpha * u);
    const Eigen::VectorXd beta =
        UnitCombination(gram, routers, Eigen::VectorXd::Constant(static_cast<Eigen::Index>(group.size()), 1.0));
    Eigen::MatrixXd b = embed;
    for (std::size_t j = 0; j < group.size(); ++j) {
      b(units, experts[j]) = alpha[j];
      b(2 * units + 1, routers[j]) = beta[j];
    }
    std::vector<double> delta(w.size() + 1, 0.0);
    for (int j : group) delta[j] = w[j];
    delta.back() = -weight;
    const double value = std::sqrt(std::max(0.0, wider.OutputSecondMoment(delta, b * gram * b.transpose())));
    const std::string what = "group (" + Names(group) + ")";
    if (!(value <= rms_tolerance)) {
      removed->push_back(what + " kept: one unit reproduces it with output rms " + detail::FormatNumber(value) +
                         " > " + detail::FormatNumber(rms_tolerance));
      continue;
    }
    if (transform->size() == 0) *transform = Eigen::MatrixXd::Identity(2 * units, 2 * units);
    const int first = group.front();
    transform->row(first).setZero();
    transform->row(units + first).setZero();
    for (std::size_t j = 0; j < group.size(); ++j) {
      (*transform)(first, experts[j]) = alpha[j];
      (*transform)(units + first, routers[j]) = beta[j];
      w[group[j]] = 0.0;
    }
    w[first] = weight;
    removed->push_back(what + " merged into " + std::to_string(first) + ": weight " + detail::FormatNumber(weight) +
                       " (c = " + detail::FormatNumber(c) + "), output rms " + detail::FormatNumber(value));
  }
}

}  // namespace

bool MergeApplies(const TwoLayerSpec& spec) {
  return spec.student.gate != nullptr && spec.student.top_k == 0 && spec.student.neurons == 1 &&
         spec.constraint != VectorConstraint::kFree;
}

Eigen::MatrixXd TransformStudents(const Eigen::MatrixXd& gram, const Eigen::MatrixXd& transform) {
  if (transform.size() == 0) return gram;
  const Eigen::Index p = transform.rows(), n = gram.rows();
  Eigen::MatrixXd b = Eigen::MatrixXd::Identity(n, n);
  b.topLeftCorner(p, p) = transform;
  Eigen::MatrixXd out = b * gram * b.transpose();
  return 0.5 * (out + out.transpose());
}

Pruning Prune(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::string& rule, double tolerance,
              double rms_tolerance) {
  Pruning result;
  std::vector<double>& w = result.weights;
  w = flow.StudentWeights();
  const int units = static_cast<int>(w.size());
  const bool gated = flow.spec().student.HasRouters();
  const Eigen::VectorXd inverse = gram.diagonal().cwiseSqrt().cwiseInverse();
  auto cosine = [&](int a, int b) { return gram(a, b) * inverse[a] * inverse[b]; };
  auto router_close = [&](int i, int j) { return !gated || cosine(units + i, units + j) >= 1.0 - tolerance; };
  // The groups of live units sharing a router: every unit's router within the cosine tolerance
  // of the group's first.
  auto router_groups = [&]() {
    std::vector<std::vector<int>> groups;
    std::vector<bool> seen(w.size(), false);
    for (int i = 0; i < units; ++i) {
      if (w[i] == 0.0 || seen[i]) continue;
      std::vector<int> group{i};
      for (int j = i + 1; j < units; ++j) {
        if (w[j] != 0.0 && !seen[j] && router_close(i, j)) group.push_back(j);
      }
      for (int j : group) seen[j] = true;
      if (group.size() >= 2) groups.push_back(group);
    }
    return groups;
  };
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
    // router (gated), then every unit alone. E[(Σ_S a_i φ_i)²] from TwoLayerFlow::OutputSecondMoment
    // (the output moments, or the sampled risk's second difference in the weights).
    auto rms = [&](const std::vector<int>& set) {
      std::vector<double> delta(w.size(), 0.0);
      for (int i : set) delta[i] = w[i];
      return std::sqrt(std::max(0.0, flow.WithStudentWeights(w).OutputSecondMoment(delta, gram)));
    };
    auto remove = [&](const std::vector<int>& set, double value, const char* what) {
      for (int i : set) w[i] = 0.0;
      removed.push_back(std::string(what) + " (" + Names(set) + "): output rms " + detail::FormatNumber(value));
    };
    if (gated) {
      for (const std::vector<int>& group : router_groups()) {
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
  if (rule == "merge" || (all && MergeApplies(flow.spec()))) {
    if (!MergeApplies(flow.spec())) {
      throw InputError("the pruning rule 'merge' needs units with their own gates (student.gate, no top-k router), "
                       "one neuron per expert and unit vectors (student.vectors = spherical or normalised)");
    }
    const std::vector<std::vector<int>> groups = router_groups();
    if (!groups.empty()) MergeGroups(flow, gram, groups, rms_tolerance, &result.weights, &result.transform, &removed);
  }
  result.report = removed.empty() ? "nothing" : detail::Join(removed, ", ");
  return result;
}

Stage WholeRunStage(const TwoLayerSpec& spec) {
  Stage all;
  all.learning_rate = spec.learning_rate;
  all.router_learning_rate = spec.router_learning_rate;
  all.weight_learning_rate = spec.weight_learning_rate;
  return all;
}

TwoLayerFlow StageModel(const TwoLayerFlow& current, const Stage& stage, const Eigen::MatrixXd& gram,
                        std::string* pruned, Eigen::MatrixXd* transform) {
  pruned->clear();
  transform->resize(0, 0);
  TwoLayerFlow model = current;
  if (stage.prune != "none") {
    Pruning pruning = Prune(current, gram, stage.prune, stage.prune_tolerance, stage.prune_rms);
    model = current.WithStudentWeights(pruning.weights);
    *pruned = pruning.report;
    *transform = std::move(pruning.transform);
  }
  return model.WithLearningRates(stage.learning_rate, stage.router_learning_rate, stage.weight_learning_rate);
}

RunSummary RunProtocol(const TwoLayerFlow& flow, const Eigen::VectorXd& x0, const IntegratorOptions& options,
                       const std::vector<EventSpec>& events, const std::vector<Stage>& stages,
                       Trajectory* trajectory, std::vector<StageRecord>* records, const IntegrationControl& control) {
  RunSummary total;
  total.events.resize(events.size());
  // Relative thresholds come from the run's start, not from each stage's.
  Eigen::VectorXd initial(ObservableValueCount(flow.Observables()));
  flow.Observe(x0, &initial);
  for (std::size_t e = 0; e < events.size(); ++e) {
    total.events[e].spec = events[e];
    FixRelativeThreshold(&total.events[e].spec,
                         ObservableSelector(events[e].observable, flow.Observables(), "event." + events[e].name + ".observable")
                             .Evaluate(initial));
  }
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
    Eigen::MatrixXd transform;
    current = StageModel(current.AtState(x), stage, flow.Unpack(x), &record.pruned, &transform);
    if (flow.spec().trained_weights || transform.size() > 0) x = current.Pack(TransformStudents(flow.Unpack(x), transform));
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
      EventSpec spec = total.events[e].spec;
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
    total.projections += summary.projections;
    total.largest_projection = std::max(total.largest_projection, summary.largest_projection);
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
