// moeflow/verify/checks.hpp
// Claims of a paper as declarative checks in a model file ([check.NAME] sections), measured on
// the ODE (and, where a check asks, on SGD):
//   kind = order    events = a, b, c        the events happen, in this order
//   kind = before   first = A, second = B   T_A ≤ T_B; with NAME[*] on both sides, for every
//                                           element pair (A_i, B_i) of the expanded events
//   kind = scaling  event = E, exponent = x, tolerance = δ, dimensions = d1, d2, ...
//                   the log-log slope of T_E against d is x ± δ (verify runs the sweep; with
//                   sgd = true the SGD median in steps, over `seeds` seeds, needs --sgd)
//   kind = bound    observable = EXPR, constant = C, power = p, until = T (a time or an event)
//                   |EXPR| ≤ C·d^p at every recorded t ≤ T (an event that does not happen fails)
//   kind = final    observable = EXPR, op = <=, threshold = v   the value at the end of the run
//   kind = argmin   observable = EXPR, key = K, values = v1, v2, ..., across = A,
//                   across_values = a1, a2, ..., interior = a_i, ...
//                   for each value of A the value of K minimising EXPR at the end of the run
//                   (the model run at every (K, A) point) is non-decreasing along
//                   across_values, and strictly inside (v1, v_last) for the `interior` values of
//                   A (e.g. the best number of active experts grows with task complexity); with
//                   sgd = true the median over `seeds` SGD seeds (needs --sgd)
// Every kind takes `set = KEY=VALUE, ...`: the check is measured on the model with these keys
// changed (e.g. a pruning protocol after the run the other checks read).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "moeflow/integrate/events.hpp"

namespace moeflow {

enum class CheckKind { kOrder, kBefore, kScaling, kBound, kFinal, kArgmin };

struct CheckSpec {
  std::string name;
  CheckKind kind = CheckKind::kOrder;
  std::vector<std::string> events;  // order: the sequence; before: {first, second}; scaling: {event}
  std::string observable;           // bound, final
  double exponent = 0.0, tolerance = 0.0;  // scaling
  std::vector<double> dimensions;          // scaling
  bool sgd = false;                        // scaling on SGD steps
  // scaling and argmin with sgd: the SGD seeds (seed, seed + 1, ...); order, before, bound and
  // final: the ODE is run from the initial overlaps of each of these seeds and the check holds if
  // it holds for at least the fraction `at_least` of them (claims "with high probability").
  int seeds = 8;
  double at_least = 1.0;
  double constant = 0.0, power = 0.0, until = 0.0;  // bound
  std::string until_event;                          // bound: the horizon is this event's time
  Comparison comparison = Comparison::kLessEqual;   // final
  double threshold = 0.0;                           // final
  std::string key, across;                          // argmin
  std::vector<std::string> values, across_values, interior;  // argmin
  // KEY=VALUE applied to the model of the check's own runs (key `set`): scaling and argmin make
  // theirs anyway; the other kinds then read one run of the changed model instead of the file's
  // (checks with the same list share it).
  std::vector<std::string> overrides;
  std::string description;  // the claim in words (optional key `claim`)
};

enum class CheckStatus { kPass, kFail, kSkipped };
const char* ToString(CheckStatus status);

struct CheckResult {
  CheckSpec spec;
  CheckStatus status = CheckStatus::kFail;
  std::string expected;  // the rule with its numbers
  std::string measured;  // what the run gave
  std::vector<double> values;  // the measured numbers (event times, the slope, ...)
  // The runs the check read that ended abnormally (diverged, not finite, step underflow,
  // max_steps, invariant violated): which run, the outcome, when and why. A final or argmin
  // check, or a bound check whose window the run did not reach, then FAILs: it has no final
  // value to judge. Event checks (order, before, scaling) judge the events that happened before
  // the abnormal end, which are measurements, and report the end beside them.
  std::vector<std::string> abnormal_runs;
};

}  // namespace moeflow

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/protocol.hpp"

namespace moeflow {

struct VerifyOptions {
  bool sgd = false;  // run the checks that need SGD (else they are skipped)
  int threads = 1;
  const std::atomic<bool>* interrupt = nullptr;  // set to stop every run (Ctrl-C)
  // A one-line status of the runs under way, e.g. "check runs: 3 of 8 done; seed=5 t = 120 of
  // 300, seed=6 t = 80 of 300". Called now and then from the running threads, one call at a time.
  std::function<void(const std::string& status)> progress;
};

// The model's own ODE run (the one `moeflow flow` makes) and every check's result.
struct Verification {
  RunSummary summary;
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  std::vector<CheckResult> results;

  bool AllPassed() const;  // no FAIL (skipped checks do not fail)
};

// What Verify runs, checked without running it: the model and the model of every run its checks
// make are built (and their [sgd] options checked where SGD runs), so a bad `set`, dimension or
// grid value is reported at once, naming its check and the run. Throws InputError.
struct VerificationPlan {
  std::vector<CheckSpec> checks;
  // Per check, the assignments to the model of each run of its own (a `set`, a seed, a dimension,
  // a grid point); none if it reads the model's run.
  std::vector<std::vector<std::vector<std::string>>> runs;
};
VerificationPlan PlanVerification(const io::ModelFile& model, const VerifyOptions& options);

// Runs what the model's checks need and evaluates them. Throws InputError for a bad model or a
// model without checks, before any runs (PlanVerification).
Verification Verify(const io::ModelFile& model, const VerifyOptions& options);

}  // namespace moeflow
