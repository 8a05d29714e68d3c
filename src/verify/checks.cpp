#include "moeflow/verify/checks.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/compare.hpp"
#include "moeflow/sgd/statistics.hpp"

namespace moeflow {
namespace {

std::string Num(double v) { return detail::FormatNumber(v); }

const EventRecord* FindEvent(const RunSummary& summary, const std::string& name) {
  for (const EventRecord& e : summary.events) {
    if (e.spec.name == name) return &e;
  }
  return nullptr;
}

// Records a run that ended abnormally in r.abnormal_runs; true if it did.
bool NoteAbnormal(const RunSummary& summary, const std::string& run, CheckResult* r) {
  if (summary.Ok()) return false;
  r->abnormal_runs.push_back((run.empty() ? "" : run + ": ") + ToString(summary.termination) + " at t = " +
                             Num(summary.t_final) + " (" + summary.message + ")");
  return true;
}

std::string Time(const RunSummary& summary, const std::string& name) {
  const EventRecord* e = FindEvent(summary, name);
  return name + (e != nullptr && e->occurred ? " at t = " + Num(e->time) : " did not happen");
}

CheckResult Order(const CheckSpec& c, const RunSummary& summary) {
  CheckResult r;
  r.spec = c;
  r.expected = "in this order: " + detail::Join(c.events, " <= ");
  bool ok = true;
  double previous = -1;
  std::vector<std::string> parts;
  for (const std::string& name : c.events) {
    const EventRecord* e = FindEvent(summary, name);
    const double t = e != nullptr && e->occurred ? e->time : std::nan("");
    r.values.push_back(t);
    ok = ok && std::isfinite(t) && t >= previous;
    previous = std::isfinite(t) ? t : previous;
    parts.push_back(Time(summary, name));
  }
  r.measured = detail::Join(parts, ", ");
  r.status = ok ? CheckStatus::kPass : CheckStatus::kFail;
  NoteAbnormal(summary, "", &r);
  return r;
}

CheckResult Before(const CheckSpec& c, const RunSummary& summary) {
  CheckResult r;
  r.spec = c;
  std::vector<std::string> rules, parts;
  bool ok = true;
  for (std::size_t i = 0; i + 1 < c.events.size(); i += 2) {
    const EventRecord* a = FindEvent(summary, c.events[i]);
    const EventRecord* b = FindEvent(summary, c.events[i + 1]);
    const double ta = a != nullptr && a->occurred ? a->time : std::nan("");
    const double tb = b != nullptr && b->occurred ? b->time : std::nan("");
    r.values.push_back(ta);
    r.values.push_back(tb);
    const bool pair_ok = std::isfinite(ta) && std::isfinite(tb) && ta <= tb;
    ok = ok && pair_ok;
    rules.push_back(c.events[i] + " <= " + c.events[i + 1]);
    parts.push_back(Num(ta) + (pair_ok ? " <= " : " vs ") + Num(tb));
  }
  r.expected = detail::Join(rules, ", ");
  r.measured = detail::Join(parts, ", ");
  r.status = ok ? CheckStatus::kPass : CheckStatus::kFail;
  NoteAbnormal(summary, "", &r);
  return r;
}

// The model with KEY=VALUE assignments applied.
io::ModelFile Assigned(io::ModelFile model, const std::vector<std::string>& assignments) {
  for (const std::string& a : assignments) model.Set(a);
  return model;
}

// The model of a check's own runs: the file's with the check's `set` assignments.
io::ModelFile CheckModel(const CheckSpec& c, const io::ModelFile& model) { return Assigned(model, c.overrides); }

// The runs of the checks, each as assignments to the model of the check (CheckModel):
// a scaling check's dimensions,
std::vector<std::vector<std::string>> ScalingLists(const CheckSpec& c) {
  std::vector<std::vector<std::string>> lists;
  for (double d : c.dimensions) lists.push_back({"d=" + Num(d)});
  return lists;
}

// an argmin check's grid (its key fastest),
std::vector<std::vector<std::string>> ArgminLists(const CheckSpec& c) {
  std::vector<std::vector<std::string>> lists;
  const std::size_t nk = c.values.size(), na = c.across_values.size();
  for (std::size_t i = 0; i < nk * na; ++i) {
    lists.push_back({c.key + "=" + c.values[i % nk], c.across + "=" + c.across_values[i / nk]});
  }
  return lists;
}

// and the seeds of any other check (the model's, then the next ones), with the assignments of
// each one's run to the file's model: the check's `set` and, after the first, the seed.
std::vector<std::pair<long long, std::vector<std::string>>> SeedLists(const CheckSpec& c, const io::ModelFile& model) {
  std::vector<std::pair<long long, std::vector<std::string>>> lists;
  const long long base = c.seeds > 1 ? CheckModel(c, model).GetInteger("seed", 1, 0) : 0;
  for (int i = 0; i < c.seeds; ++i) {
    std::vector<std::string> list = c.overrides;
    if (i > 0) list.push_back("seed=" + std::to_string(base + i));
    lists.emplace_back(base + i, std::move(list));
  }
  return lists;
}

}  // namespace

VerificationPlan PlanVerification(const io::ModelFile& model, const VerifyOptions& options) {
  VerificationPlan plan;
  plan.checks = BuildFlow(model).checks;
  if (plan.checks.empty()) {
    throw InputError("the model has no [check.NAME] sections: nothing to verify (see moeflow verify --help)");
  }
  for (const CheckSpec& c : plan.checks) {
    std::vector<std::vector<std::string>>& lists = plan.runs.emplace_back();
    if (c.kind == CheckKind::kScaling || c.kind == CheckKind::kArgmin) {
      for (std::vector<std::string>& l : c.kind == CheckKind::kScaling ? ScalingLists(c) : ArgminLists(c)) {
        l.insert(l.begin(), c.overrides.begin(), c.overrides.end());
        lists.push_back(std::move(l));
      }
    } else {
      for (auto& [seed, list] : SeedLists(c, model)) {
        if (!list.empty()) lists.push_back(std::move(list));  // else it reads the model's run
      }
    }
    for (const std::vector<std::string>& list : lists) {
      try {
        const FlowSetup setup = BuildFlow(Assigned(model, list));
        if (c.sgd && options.sgd) ValidateSgd(setup);
      } catch (const InputError& e) {
        throw InputError("check '" + c.name + "' (run " + detail::Join(list, ", ") + "): " + e.what());
      }
    }
  }
  return plan;
}

namespace {

// The runs of one phase of a verification (the model's run, the checks' own runs, a check's
// sweep) shown as one status line: how many are done and the time each running one has reached.
// Runs on several threads report into it at once; the line goes out one call at a time.
class RunBoard {
 public:
  // labels: one per run, its KEY=VALUE assignments (shown with the keys' last component).
  RunBoard(const VerifyOptions& options, std::string phase, const std::vector<std::vector<std::string>>& labels)
      : state_(std::make_shared<State>()), interrupt_(options.interrupt) {
    state_->show = options.progress;
    state_->phase = std::move(phase);
    for (const std::vector<std::string>& assignments : labels) {
      std::vector<std::string> brief;
      for (const std::string& a : assignments) {
        const std::size_t eq = a.find('='), dot = a.rfind('.', eq);
        brief.push_back(dot == std::string::npos ? a : a.substr(dot + 1));
      }
      state_->labels.push_back(detail::Join(brief, ", "));
    }
    state_->t.assign(state_->labels.size(), -1.0);  // < 0: not started
    state_->t_end.assign(state_->labels.size(), 0.0);
    state_->done.assign(state_->labels.size(), false);
  }
  // Run i starts (to t_end): its control, with the interrupt and its progress into the board.
  IntegrationControl Start(std::size_t i, double t_end) const {
    IntegrationControl control;
    control.interrupt = interrupt_;
    if (state_->show) {
      state_->Update(i, 0.0, t_end);
      control.progress = [state = state_, i](double t, double end) { state->Update(i, t, end); };
    }
    return control;
  }
  // The control of the phase's SGD runs: their steps are added up.
  SgdControl Sgd() const {
    SgdControl control;
    control.interrupt = interrupt_;
    if (state_->show) {
      control.progress = [state = state_](long long steps) {
        const std::lock_guard<std::mutex> lock(state->mutex);
        state->sgd_steps = std::max(state->sgd_steps, 0LL) + steps;
        state->Show();
      };
    }
    return control;
  }
  void Done(std::size_t i) const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    state_->done[i] = true;
    state_->Show();
  }

 private:
  struct State {
    std::mutex mutex;
    std::function<void(const std::string&)> show;
    std::string phase;
    std::vector<std::string> labels;
    std::vector<double> t, t_end;
    std::vector<bool> done;
    long long sgd_steps = -1;
    void Update(std::size_t i, double time, double end) {
      const std::lock_guard<std::mutex> lock(mutex);
      t[i] = time;
      t_end[i] = end;
      Show();
    }
    // e.g. "own runs: 3/9 done; t_end=300, seed=5 t=120/300; t_end=300, seed=6 t=80.2/300".
    void Show() const {
      if (!show) return;
      auto brief = [](double v) {
        char text[32];
        std::snprintf(text, sizeof text, "%.3g", v);
        return std::string(text);
      };
      std::vector<std::string> parts;
      if (labels.size() > 1) {
        parts.push_back(std::to_string(std::count(done.begin(), done.end(), true)) + "/" +
                        std::to_string(labels.size()) + " done");
      }
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (done[i] || t[i] < 0) continue;
        parts.push_back((labels[i].empty() ? "" : labels[i] + " ") + "t=" + brief(t[i]) + "/" + brief(t_end[i]));
      }
      if (sgd_steps >= 0) parts.push_back(brief(static_cast<double>(sgd_steps)) + " SGD steps");
      show(phase + ": " + detail::Join(parts, "; "));
    }
  };
  std::shared_ptr<State> state_;
  const std::atomic<bool>* interrupt_;
};

// One ODE run of a model, as `moeflow flow` makes it.
struct Run {
  RunSummary summary;
  Trajectory trajectory;
  long long d = 0;
};

Run RunFlow(const FlowSetup& setup, const IntegrationControl& control) {
  Run run;
  run.d = setup.d;
  std::vector<StageRecord> stages;
  run.summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages,
                            &run.trajectory, &stages, control);
  return run;
}

CheckResult Scaling(const CheckSpec& c, const io::ModelFile& file, const VerifyOptions& options) {
  const io::ModelFile model = CheckModel(c, file);
  CheckResult r;
  r.spec = c;
  const std::string& event = c.events.front();
  std::ostringstream expected;
  expected << "T(" << event << ") ~ d^" << Num(c.exponent) << " +- " << Num(c.tolerance)
           << (c.sgd ? " in SGD steps (median over " + std::to_string(c.seeds) + " seeds)" : " (ODE time)");
  r.expected = expected.str();
  std::vector<double> times;
  if (c.sgd) {
    if (!options.sgd) {
      r.status = CheckStatus::kSkipped;
      r.measured = "needs SGD: run moeflow verify --sgd";
      return r;
    }
    CompareOptions co;
    for (double d : c.dimensions) co.dimensions.push_back(static_cast<long long>(d));
    co.seeds = c.seeds;
    co.threads = options.threads;
    co.control = RunBoard(options, "check " + c.name, {}).Sgd();
    const OdeSgdComparison cmp = CompareOdeSgd(model, co);
    std::size_t index = 0;
    for (std::size_t e = 0; e < cmp.events.size(); ++e) {
      if (cmp.events[e].name == event) index = e;
    }
    for (const DimensionComparison& dc : cmp.dimensions) {
      times.push_back(dc.sgd_times[index].median / dc.learning_rate);
      for (const SgdRun& run : dc.sgd) {
        NoteAbnormal(run.summary, "d = " + std::to_string(dc.d) + ", SGD seed " + std::to_string(run.seed), &r);
      }
    }
  } else {
    const std::vector<std::vector<std::string>> lists = ScalingLists(c);
    const RunBoard board(options, "check " + c.name, lists);
    for (std::size_t i = 0; i < c.dimensions.size(); ++i) {
      const double d = c.dimensions[i];
      const FlowSetup setup = BuildFlow(Assigned(model, lists[i]));
      const Run run = RunFlow(setup, board.Start(i, setup.options.t_end));
      board.Done(i);
      const EventRecord* e = FindEvent(run.summary, event);
      times.push_back(e != nullptr && e->occurred ? e->time : std::nan(""));
      NoteAbnormal(run.summary, "d = " + Num(d), &r);
    }
  }
  const PowerLawFit fit = FitPowerLaw(c.dimensions, times);
  r.values = times;
  r.values.push_back(fit.exponent);
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < times.size(); ++i) parts.push_back(Num(times[i]));
  bool all = true;
  for (double t : times) all = all && std::isfinite(t);
  r.measured = "slope " + Num(fit.exponent) + " (" + (c.sgd ? "steps " : "t = ") + detail::Join(parts, ", ") + ")";
  r.status = all && std::abs(fit.exponent - c.exponent) <= c.tolerance ? CheckStatus::kPass : CheckStatus::kFail;
  return r;
}

CheckResult Bound(const CheckSpec& c, const Trajectory& trajectory, const RunSummary& summary, long long d) {
  CheckResult r;
  r.spec = c;
  const double bound = c.constant * std::pow(static_cast<double>(d), c.power);
  double until = c.until;
  std::string horizon = Num(c.until);
  if (!c.until_event.empty()) {
    const EventRecord* e = FindEvent(summary, c.until_event);
    until = e != nullptr && e->occurred ? e->time : std::nan("");
    horizon = Time(summary, c.until_event);
  }
  const ObservableSelector selector(c.observable, trajectory.observables, "check." + c.name + ".observable");
  double largest = 0.0, at = 0.0;
  // Without its horizon event the check fails; the largest value over the whole run is reported.
  const double last = std::isfinite(until) ? until : std::numeric_limits<double>::infinity();
  for (std::size_t row = 0; row < trajectory.time.size() && trajectory.time[row] <= last; ++row) {
    const double v = std::abs(selector.Evaluate(trajectory.values[row]));
    if (v > largest) largest = v, at = trajectory.time[row];
  }
  r.expected = "|" + c.observable + "| <= " + Num(c.constant) + " d^" + Num(c.power) + " = " + Num(bound) +
               " for t <= " + (c.until_event.empty() ? horizon : "the time of event " + c.until_event);
  r.measured = "max " + Num(largest) + " at t = " + Num(at) +
               (c.until_event.empty() ? "" : std::isfinite(until) ? " (" + horizon + ")" : " over the whole run (" + horizon + ")");
  r.values = {largest, bound};
  // A run that ended abnormally covers the window only if it reached its end (the horizon event
  // happened, or the last row is at or after `until`).
  const bool covered =
      !NoteAbnormal(summary, "", &r) || (!trajectory.time.empty() && trajectory.time.back() >= last);
  r.status = std::isfinite(until) && covered && largest <= bound ? CheckStatus::kPass : CheckStatus::kFail;
  return r;
}

CheckResult Final(const CheckSpec& c, const Trajectory& trajectory, const RunSummary& summary) {
  CheckResult r;
  r.spec = c;
  const ObservableSelector selector(c.observable, trajectory.observables, "check." + c.name + ".observable");
  const double v = trajectory.values.empty() ? std::nan("") : selector.Evaluate(trajectory.values.back());
  EventSpec rule;
  rule.comparison = c.comparison;
  rule.threshold = c.threshold;
  r.expected = c.observable + " " + ToString(c.comparison) + " " + Num(c.threshold) + " at the end";
  r.measured = Num(v) + " at t = " + Num(trajectory.time.empty() ? 0.0 : trajectory.time.back());
  r.values = {v};
  const bool abnormal = NoteAbnormal(summary, "", &r);  // its last row is not the end of the run asked for
  r.status = !abnormal && std::isfinite(v) && EventConditionHolds(rule, v) ? CheckStatus::kPass : CheckStatus::kFail;
  return r;
}

// The final value of the check's observable at every (key, across) point: the ODE's, or the
// median over the seeds of SGD's.
CheckResult Argmin(const CheckSpec& c, const io::ModelFile& file, const VerifyOptions& options) {
  const io::ModelFile model = CheckModel(c, file);
  CheckResult r;
  r.spec = c;
  r.expected = "the " + c.key + " minimising final " + c.observable + (c.sgd ? " (SGD median)" : "") +
               " is non-decreasing in " + c.across +
               (c.interior.empty() ? "" : ", strictly inside (" + c.values.front() + ", " + c.values.back() +
                                              ") at " + c.across + " = " + detail::Join(c.interior, ", "));
  if (c.sgd && !options.sgd) {
    r.status = CheckStatus::kSkipped;
    r.measured = "needs SGD: run moeflow verify --sgd";
    return r;
  }
  const std::size_t nk = c.values.size(), na = c.across_values.size();
  std::vector<double> final(nk * na, std::nan(""));
  std::vector<std::vector<std::string>> abnormal(nk * na);  // per point, written by its own thread
  const std::vector<std::vector<std::string>> lists = ArgminLists(c);
  const RunBoard board(options, "check " + c.name, lists);
  ParallelFor(nk * na, options.threads, [&](std::size_t i) {
    const FlowSetup setup = BuildFlow(Assigned(model, lists[i]));
    const std::string label = detail::Join(lists[i], ", ");
    CheckResult notes;
    if (c.sgd) {
      const std::vector<SgdRun> runs = SimulateModelSgd(setup, c.seeds, 1, board.Sgd());
      std::vector<double> values;
      for (const SgdRun& run : runs) {
        NoteAbnormal(run.summary, label + ", SGD seed " + std::to_string(run.seed), &notes);
        const ObservableSelector selector(c.observable, run.trajectory.observables, "check." + c.name + ".observable");
        values.push_back(run.trajectory.values.empty() ? std::nan("") : selector.Evaluate(run.trajectory.values.back()));
      }
      final[i] = Summarise(values).median;
    } else {
      const Run run = RunFlow(setup, board.Start(i, setup.options.t_end));
      NoteAbnormal(run.summary, label, &notes);
      const ObservableSelector selector(c.observable, run.trajectory.observables, "check." + c.name + ".observable");
      if (!run.trajectory.values.empty()) final[i] = selector.Evaluate(run.trajectory.values.back());
    }
    abnormal[i] = std::move(notes.abnormal_runs);
    board.Done(i);
  });
  for (auto& a : abnormal) r.abnormal_runs.insert(r.abnormal_runs.end(), a.begin(), a.end());
  bool ok = true;
  std::vector<std::string> parts;
  int previous = -1;
  for (std::size_t a = 0; a < na; ++a) {
    int best = -1;
    for (std::size_t k = 0; k < nk; ++k) {
      const double v = final[a * nk + k];
      if (std::isfinite(v) && (best < 0 || v < final[a * nk + best])) best = static_cast<int>(k);
    }
    r.values.push_back(best >= 0 ? io::ParseNumber(c.values[best]).value_or(best) : std::nan(""));
    parts.push_back(c.across + "=" + c.across_values[a] + ": " + (best >= 0 ? c.values[best] : "none"));
    ok = ok && best >= 0 && best >= previous;
    const bool interior = std::find(c.interior.begin(), c.interior.end(), c.across_values[a]) != c.interior.end();
    if (interior) ok = ok && best > 0 && best < static_cast<int>(nk) - 1;
    previous = std::max(previous, best);
  }
  r.values.insert(r.values.end(), final.begin(), final.end());
  r.measured = "best " + c.key + " " + detail::Join(parts, "; ");
  // A point whose run ended abnormally has no final value: the minimum cannot be judged.
  r.status = ok && r.abnormal_runs.empty() ? CheckStatus::kPass : CheckStatus::kFail;
  return r;
}

// A check over seeds, from its result on the run of each seed: it holds if it holds for at least
// the fraction at_least of the seeds. values: the number of seeds where it holds, the number of
// seeds, then 1/0 per seed.
CheckResult OverSeeds(const CheckSpec& c, const std::vector<std::pair<long long, CheckResult>>& per_seed) {
  CheckResult r;
  r.spec = c;
  std::vector<std::string> failing, passing;
  std::vector<double> flags;
  for (const auto& [seed, one] : per_seed) {
    const std::string label = "seed " + std::to_string(seed);
    const bool pass = one.status == CheckStatus::kPass;
    flags.push_back(pass ? 1.0 : 0.0);
    (pass ? passing : failing).push_back(label + ": " + one.measured);
    for (const std::string& a : one.abnormal_runs) r.abnormal_runs.push_back(label + ": " + a);
  }
  const double n = static_cast<double>(per_seed.size());
  const double holds = n - static_cast<double>(failing.size());
  r.expected = per_seed.front().second.expected + ", for at least " + Num(c.at_least * 100) + "% of " + Num(n) +
               " seeds (" + std::to_string(per_seed.front().first) + ".." + std::to_string(per_seed.back().first) + ")";
  r.measured = "holds for " + Num(holds) + " of " + Num(n) + " seeds" +
               (failing.empty() ? "" : "; fails for " + detail::Join(failing, "; ")) +
               (passing.empty() ? "" : "; holds for " + detail::Join(passing, "; "));
  r.values = {holds, n};
  r.values.insert(r.values.end(), flags.begin(), flags.end());
  r.status = holds >= c.at_least * n - 1e-9 ? CheckStatus::kPass : CheckStatus::kFail;
  return r;
}

}  // namespace

const char* ToString(CheckStatus status) {
  switch (status) {
    case CheckStatus::kPass: return "PASS";
    case CheckStatus::kFail: return "FAIL";
    case CheckStatus::kSkipped: return "SKIP";
  }
  return "?";
}

bool Verification::AllPassed() const {
  for (const CheckResult& r : results) {
    if (r.status == CheckStatus::kFail) return false;
  }
  return true;
}

Verification Verify(const io::ModelFile& model, const VerifyOptions& options) {
  PlanVerification(model, options);  // every run's model is valid before any runs
  const FlowSetup setup = BuildFlow(model);
  Verification v;
  v.summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages,
                          &v.trajectory, &v.stages, RunBoard(options, "the model's run", {{}}).Start(0, setup.options.t_end));
  // Order, before, bound and final checks with a `set` or several seeds read their own runs of the
  // changed model, one per distinct list of assignments (the model's seed adds none).
  std::map<std::vector<std::string>, Run> own;
  own.emplace(std::vector<std::string>{}, Run{v.summary, v.trajectory, setup.d});
  // The missing runs of every such check, on `threads` threads.
  std::vector<std::vector<std::string>> missing;
  for (const CheckSpec& c : setup.checks) {
    if (c.kind == CheckKind::kScaling || c.kind == CheckKind::kArgmin) continue;
    for (auto& [seed, list] : SeedLists(c, model)) {
      if (own.count(list) == 0 && std::find(missing.begin(), missing.end(), list) == missing.end()) {
        missing.push_back(std::move(list));
      }
    }
  }
  std::vector<Run> runs(missing.size());
  const RunBoard board(options, "own runs", missing);
  ParallelFor(missing.size(), options.threads, [&](std::size_t i) {
    const FlowSetup run_setup = BuildFlow(Assigned(model, missing[i]));
    runs[i] = RunFlow(run_setup, board.Start(i, run_setup.options.t_end));
    board.Done(i);
  });
  for (std::size_t i = 0; i < missing.size(); ++i) own.emplace(missing[i], std::move(runs[i]));
  auto on_run = [&](const CheckSpec& c, const Run& run) {
    switch (c.kind) {
      case CheckKind::kOrder: return Order(c, run.summary);
      case CheckKind::kBefore: return Before(c, run.summary);
      case CheckKind::kBound: return Bound(c, run.trajectory, run.summary, run.d);
      default: return Final(c, run.trajectory, run.summary);
    }
  };
  for (const CheckSpec& c : setup.checks) {
    if (c.kind == CheckKind::kScaling) {
      v.results.push_back(Scaling(c, model, options));
    } else if (c.kind == CheckKind::kArgmin) {
      v.results.push_back(Argmin(c, model, options));
    } else if (c.seeds == 1) {
      v.results.push_back(on_run(c, own.at(c.overrides)));
    } else {
      std::vector<std::pair<long long, CheckResult>> per_seed;
      for (const auto& [seed, list] : SeedLists(c, model)) per_seed.emplace_back(seed, on_run(c, own.at(list)));
      v.results.push_back(OverSeeds(c, per_seed));
    }
    if (!c.overrides.empty() && c.kind != CheckKind::kScaling && c.kind != CheckKind::kArgmin) {
      v.results.back().measured += " (own run" + std::string(c.seeds > 1 ? "s" : "") + ": " +
                                   detail::Join(c.overrides, ", ") + ")";
    }
    if (!v.results.back().abnormal_runs.empty()) {
      v.results.back().measured += "; ended abnormally: " + detail::Join(v.results.back().abnormal_runs, "; ");
    }
  }
  return v;
}

}  // namespace moeflow
