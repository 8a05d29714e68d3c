// moeflow/integrate/integrator.hpp
// Adaptive integration of a FlowSystem with Boost.Odeint error-controlled steppers, output on
// a time grid, dense-output location of events, and outcomes (divergence, NaN, step-size
// underflow) reported in a RunSummary rather than thrown.
#pragma once

#include <Eigen/Core>
#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "moeflow/integrate/events.hpp"
#include "moeflow/integrate/flow_system.hpp"

namespace moeflow {

// Error-controlled steppers. Events and grid output use each stepper's dense output:
// dopri5 and bulirsch_stoer interpolate; cash_karp54 and fehlberg78 (no interpolant in
// odeint) take one step of their own scheme from the start of the accepted step.
enum class StepperType { kDopri5, kCashKarp54, kFehlberg78, kBulirschStoer };

const char* ToString(StepperType stepper);
bool FromString(std::string_view text, StepperType* stepper);
std::vector<std::string> StepperNames();

struct IntegratorOptions {
  StepperType stepper = StepperType::kDopri5;
  // Odeint's error control: a step is accepted when, for every component,
  //   |err_i| <= abs_tol + rel_tol * (|x_i| + dt |dx_i/dt|).
  double abs_tol = 1e-14;
  double rel_tol = 1e-10;
  double t_end = 100.0;  // stop time (> 0)
  double dt_initial = 1e-4;
  // A step below dt_min * max(1, |t|) is a step-size underflow (an outcome, not an error).
  double dt_min = 1e-14;
  long long max_steps = 100'000'000;  // accepted steps before the run stops (outcome)
  // The run stops as diverged when max_i |x_i| exceeds this.
  double divergence_threshold = 1e8;
  // Output: rows at these times (sorted, in [0, t_end]); plus every accepted step if asked.
  std::vector<double> output_times;
  bool output_every_step = false;
  // After every accepted step, FlowSystem::Project with tolerance abs_tol; a projected state
  // restarts the stepper from it (same step size).
  bool project = true;

  // Throws InputError naming the option ("integrate.rel_tol"), its value and the rule.
  void Validate() const;
};

// The time grid: t = 0, then `points` times up to t_end, equally spaced ("linear") or
// log-spaced from t_first ("log").
std::vector<double> MakeTimeGrid(const std::string& kind, int points, double t_first, double t_end);

enum class Termination {
  kReachedEnd,       // t_end reached
  kStoppedOnEvent,   // an event with stop = true happened
  kDiverged,         // max |x| > divergence_threshold
  kNotFinite,        // a NaN or infinity in the state
  kStepUnderflow,    // the step size fell below dt_min
  kMaxSteps,         // max_steps accepted steps without reaching t_end
  kInvariantViolated,// the model's invariants were violated
  kInterrupted,      // the caller asked to stop (Ctrl-C)
};

const char* ToString(Termination termination);

struct RunSummary {
  Termination termination = Termination::kReachedEnd;
  std::string message;  // what happened, with numbers
  double t_final = 0.0;
  long long accepted_steps = 0;
  long long rejected_steps = 0;
  long long drift_evaluations = 0;
  long long projections = 0;      // accepted steps after which FlowSystem::Project moved the state
  double largest_projection = 0;  // the largest such move, max_i |Δx_i|
  double wall_seconds = 0.0;
  std::vector<EventRecord> events;
  Eigen::VectorXd final_state;  // the state at t_final

  // True for the normal endings (t_end reached or stopped on an event).
  bool Ok() const;
};

// The recorded trajectory: values[r] holds Observe() at time[r].
struct Trajectory {
  std::vector<ObservableInfo> observables;
  std::vector<double> time;
  std::vector<Eigen::VectorXd> values;
};

struct IntegrationControl {
  const std::atomic<bool>* interrupt = nullptr;      // set to stop the run (Ctrl-C)
  std::function<void(double t, double t_end)> progress;  // called now and then
};

// Integrates dx/dt = F(x) from x(0) = x0 to options.t_end (or a stopping event).
// Bad options throw InputError; everything else that ends the run is in the summary.
RunSummary Integrate(const FlowSystem& system, const Eigen::VectorXd& x0,
                     const IntegratorOptions& options, const std::vector<EventSpec>& events,
                     Trajectory* trajectory, const IntegrationControl& control = {});

}  // namespace moeflow
