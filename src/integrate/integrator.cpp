// The integration loop: accepted steps, events located on the dense output, grid output,
// outcomes with numbers.
#include "moeflow/integrate/integrator.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "common/memory.hpp"
#include "common/text.hpp"
#include "integrate/stepping_driver.hpp"
#include "moeflow/error.hpp"

namespace moeflow {
namespace {

using detail::FormatNumber;
std::string Num(double v) { return FormatNumber(v); }

// The smallest violation FlowSystem::Project is asked to correct (abs_tol may be 0): below it
// round-off, not integration error.
constexpr double kProjectionFloor = 1e-12;

constexpr struct {
  StepperType type;
  const char* name;
} kSteppers[] = {
    {StepperType::kDopri5, "dopri5"},
    {StepperType::kCashKarp54, "cash_karp54"},
    {StepperType::kFehlberg78, "fehlberg78"},
    {StepperType::kBulirschStoer, "bulirsch_stoer"},
};

// Bisection on the dense output for the first time in (lo, hi] at which the condition holds
// (it does not at lo, it does at hi), down to a few ulps of t.
// Only the event's observable is computed (FlowSystem::ObserveSome).
struct EventLocator {
  const FlowSystem& system;
  detail::SteppingDriver& driver;
  Eigen::VectorXd state, values;
  std::vector<bool> wanted;  // the located event's observable

  double ValueAt(double t, const ObservableSelector& selector) {
    driver.StateAt(t, &state);
    system.ObserveSome(state, wanted, &values);
    return selector.Evaluate(values);
  }
  double Locate(const EventSpec& spec, const ObservableSelector& selector, double lo, double hi,
                double* value_at_hi) {
    std::fill(wanted.begin(), wanted.end(), false);
    wanted[static_cast<std::size_t>(selector.observable())] = true;
    for (int i = 0; i < 200 && hi - lo > 4 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(hi)); ++i) {
      const double mid = 0.5 * (lo + hi);
      const double v = ValueAt(mid, selector);
      if (EventConditionHolds(spec, v)) {
        hi = mid;
        *value_at_hi = v;
      } else {
        lo = mid;
      }
    }
    return hi;
  }
};

}  // namespace

const char* ToString(StepperType stepper) {
  for (const auto& s : kSteppers) {
    if (s.type == stepper) return s.name;
  }
  return "?";
}

bool FromString(std::string_view text, StepperType* stepper) {
  for (const auto& s : kSteppers) {
    if (text == s.name) {
      *stepper = s.type;
      return true;
    }
  }
  return false;
}

std::vector<std::string> StepperNames() {
  std::vector<std::string> names;
  for (const auto& s : kSteppers) names.push_back(s.name);
  return names;
}

const char* ToString(Termination termination) {
  switch (termination) {
    case Termination::kReachedEnd: return "reached_end";
    case Termination::kStoppedOnEvent: return "stopped_on_event";
    case Termination::kDiverged: return "diverged";
    case Termination::kNotFinite: return "not_finite";
    case Termination::kStepUnderflow: return "step_underflow";
    case Termination::kMaxSteps: return "max_steps";
    case Termination::kInvariantViolated: return "invariant_violated";
    case Termination::kInterrupted: return "interrupted";
  }
  return "?";
}

bool RunSummary::Ok() const {
  return termination == Termination::kReachedEnd || termination == Termination::kStoppedOnEvent;
}

void IntegratorOptions::Validate() const {
  auto bad = [](const char* key, double v, const char* rule) { ThrowBadValue(key, Num(v), rule); };
  if (!(abs_tol >= 0) || !std::isfinite(abs_tol)) bad("integrate.abs_tol", abs_tol, "must be >= 0");
  if (!(rel_tol >= 0 && rel_tol < 1)) bad("integrate.rel_tol", rel_tol, "must be in [0, 1)");
  if (abs_tol == 0 && rel_tol == 0) bad("integrate.rel_tol", rel_tol, "and integrate.abs_tol cannot both be 0");
  if (!(t_end > 0) || !std::isfinite(t_end)) bad("integrate.t_end", t_end, "must be a finite time > 0");
  if (!(dt_initial > 0)) bad("integrate.dt_initial", dt_initial, "must be > 0");
  if (!(dt_min > 0 && dt_min < 1)) bad("integrate.dt_min", dt_min, "must be in (0, 1)");
  if (max_steps < 1) bad("integrate.max_steps", static_cast<double>(max_steps), "must be >= 1");
  if (!(divergence_threshold > 0)) bad("integrate.divergence", divergence_threshold, "must be > 0");
  for (std::size_t i = 0; i < output_times.size(); ++i) {
    if (!(output_times[i] >= 0 && output_times[i] <= t_end) || (i > 0 && output_times[i] < output_times[i - 1])) {
      bad("output.times", output_times[i], "must be sorted times in [0, integrate.t_end]");
    }
  }
}

std::vector<double> MakeTimeGrid(const std::string& kind, int points, double t_first, double t_end) {
  if (points < 1) ThrowBadValue("output.points", std::to_string(points), "must be >= 1");
  std::vector<double> grid{0.0};
  grid.reserve(static_cast<std::size_t>(points) + 1);
  if (kind == "linear") {
    for (int i = 1; i <= points; ++i) grid.push_back(t_end * i / points);
  } else if (kind == "log") {
    if (!(t_first > 0 && t_first < t_end)) {
      ThrowBadValue("output.t_first", Num(t_first), "must be in (0, integrate.t_end = " + Num(t_end) + ")");
    }
    const double ratio = std::log(t_end / t_first);
    for (int i = 0; i < points; ++i) {
      grid.push_back(points == 1 ? t_end : t_first * std::exp(ratio * i / (points - 1)));
    }
    grid.back() = t_end;
  } else {
    ThrowBadValue("output.grid", kind, "is not one of: linear, log" + detail::DidYouMean(kind, {"linear", "log"}));
  }
  return grid;
}

RunSummary Integrate(const FlowSystem& system, const Eigen::VectorXd& x0,
                     const IntegratorOptions& options, const std::vector<EventSpec>& events,
                     Trajectory* trajectory, const IntegrationControl& control) {
  options.Validate();
  if (x0.size() != system.StateSize()) {
    throw Error("initial state has " + std::to_string(x0.size()) + " values, the system " +
                std::to_string(system.StateSize()));
  }
  if (!x0.allFinite()) throw InputError("the initial state has a NaN or infinite value");

  const auto& observables = system.Observables();
  std::vector<ObservableSelector> selectors;
  RunSummary summary;
  for (const EventSpec& spec : events) {
    selectors.emplace_back(spec.observable, observables, "event." + spec.name + ".observable");
    summary.events.push_back({spec});
  }
  if (!options.output_every_step) {
    detail::CheckTrajectoryFitsInMemory(options.output_times.size(), static_cast<std::size_t>(ObservableValueCount(observables)));
  }
  trajectory->observables = observables;
  trajectory->time.clear();
  trajectory->values.clear();

  const auto wall_start = std::chrono::steady_clock::now();
  auto last_progress = wall_start;
  long long evaluations = 0;
  auto driver = detail::MakeSteppingDriver(
      options, [&](const Eigen::VectorXd& x, Eigen::VectorXd& dxdt, double) {
        ++evaluations;
        system.Drift(x, dxdt);
      });
  EventLocator locator{system, *driver, Eigen::VectorXd(x0.size()),
                       Eigen::VectorXd(ObservableValueCount(observables)),
                       std::vector<bool>(observables.size(), false)};
  Eigen::VectorXd values(ObservableValueCount(observables));
  Eigen::VectorXd state(x0.size()), projected(x0.size());
  auto record = [&](double t, const Eigen::VectorXd& x) {
    system.Observe(x, &values);
    trajectory->time.push_back(t);
    trajectory->values.push_back(values);
  };
  auto finish = [&](Termination termination, double t, std::string message, const Eigen::VectorXd& x) {
    summary.termination = termination;
    summary.final_state = x;
    summary.t_final = t;
    summary.message = std::move(message);
    summary.drift_evaluations = evaluations;
    summary.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    return summary;
  };

  // t = 0: record, fix relative thresholds, and events that already hold. From here on the
  // events' specs are those of summary.events.
  record(0.0, x0);
  bool stop_now = false;
  for (std::size_t e = 0; e < events.size(); ++e) {
    const double v = selectors[e].Evaluate(values);
    FixRelativeThreshold(&summary.events[e].spec, v);
    if (EventConditionHolds(summary.events[e].spec, v)) {
      summary.events[e].occurred = true;
      summary.events[e].time = 0.0;
      summary.events[e].value = v;
      stop_now = stop_now || events[e].stop;
    }
  }
  if (stop_now) return finish(Termination::kStoppedOnEvent, 0.0, "a stopping event holds at t = 0", x0);

  std::vector<double> row_times;
  std::size_t next_output = 0;
  while (next_output < options.output_times.size() && options.output_times[next_output] <= 0.0) ++next_output;

  driver->Initialize(x0, 0.0, std::min(options.dt_initial, options.t_end));
  while (true) {
    if (control.interrupt != nullptr && control.interrupt->load()) {
      return finish(Termination::kInterrupted, driver->CurrentTime(),
                    "interrupted at t = " + Num(driver->CurrentTime()), driver->CurrentState());
    }
    if (summary.accepted_steps >= options.max_steps) {
      return finish(Termination::kMaxSteps, driver->CurrentTime(),
                    "stopped after max_steps = " + std::to_string(options.max_steps) +
                        " accepted steps at t = " + Num(driver->CurrentTime()) + " < t_end = " + Num(options.t_end),
                    driver->CurrentState());
    }
    const double t_before = driver->CurrentTime();
    try {
      driver->Step();
    } catch (const detail::StepSizeUnderflow& e) {
      return finish(Termination::kStepUnderflow, t_before, std::string("step-size underflow: ") + e.what(),
                    driver->CurrentState());
    }
    ++summary.accepted_steps;
    const double t0 = driver->PreviousTime();
    const double t1 = driver->CurrentTime();
    const Eigen::VectorXd& x1 = driver->CurrentState();
    if (t1 - t0 < options.dt_min * std::max(1.0, std::abs(t1))) {
      return finish(Termination::kStepUnderflow, t1,
                    "step-size underflow: accepted step " + Num(t1 - t0) + " < dt_min * max(1, |t|) = " +
                        Num(options.dt_min * std::max(1.0, std::abs(t1))) + " at t = " + Num(t1),
                    x1);
    }
    if (!x1.allFinite()) {
      Eigen::Index i = 0;
      for (; i < x1.size() && std::isfinite(x1[i]); ++i) {}
      return finish(Termination::kNotFinite, t0,
                    "state component " + std::to_string(i) + " became " + Num(x1[i]) +
                        " in the step from t = " + Num(t0) + " to t = " + Num(t1),
                    x1);
    }
    const double largest = x1.cwiseAbs().maxCoeff();
    if (largest > options.divergence_threshold) {
      record(t1, x1);
      return finish(Termination::kDiverged, t1,
                    "diverged: max |x| = " + Num(largest) + " > divergence threshold " +
                        Num(options.divergence_threshold) + " at t = " + Num(t1),
                    x1);
    }
    if (std::string violation = system.CheckInvariants(x1); !violation.empty()) {
      record(t1, x1);
      return finish(Termination::kInvariantViolated, t1, violation + " at t = " + Num(t1), x1);
    }

    // Events in (t0, t_hi]; a stopping event truncates the step at its time. Only the
    // observables that pending events read are computed.
    const double t_hi = std::min(t1, options.t_end);
    double stop_time = std::numeric_limits<double>::infinity();
    bool have_values_at_hi = false;
    for (std::size_t e = 0; e < events.size(); ++e) {
      EventRecord& rec = summary.events[e];
      if (rec.occurred) continue;
      if (!have_values_at_hi) {
        driver->StateAt(t_hi, &state);
        system.ObserveSome(state, ObservablesPendingEventsRead(selectors, summary.events, static_cast<int>(observables.size())),
                           &values);
        have_values_at_hi = true;
      }
      double v = selectors[e].Evaluate(values);
      if (!EventConditionHolds(rec.spec, v)) continue;
      rec.occurred = true;
      rec.time = locator.Locate(rec.spec, selectors[e], t0, t_hi, &v);
      rec.value = v;
      if (rec.spec.stop) stop_time = std::min(stop_time, rec.time);
    }
    for (EventRecord& rec : summary.events) {
      if (rec.occurred && rec.time > stop_time) rec = EventRecord{rec.spec};
    }

    // Output rows in (t0, min(t_hi, stop_time)].
    const double t_out = std::min(t_hi, stop_time);
    auto output_at = [&](double t) {
      if (t == t1) {
        record(t, x1);
      } else {
        driver->StateAt(t, &state);
        record(t, state);
      }
    };
    row_times.clear();
    while (next_output < options.output_times.size() && options.output_times[next_output] <= t_out) {
      row_times.push_back(options.output_times[next_output++]);
    }
    if (options.output_every_step && t1 <= t_out) row_times.push_back(t1);
    std::sort(row_times.begin(), row_times.end());
    for (double t : row_times) {
      if (t > trajectory->time.back()) output_at(t);
    }

    if (std::isfinite(stop_time)) {
      if (trajectory->time.back() < stop_time) output_at(stop_time);
      driver->StateAt(stop_time, &state);
      return finish(Termination::kStoppedOnEvent, stop_time, "stopped on event at t = " + Num(stop_time), state);
    }
    if (t1 >= options.t_end) {
      if (trajectory->time.back() < options.t_end) output_at(options.t_end);
      driver->StateAt(options.t_end, &state);
      return finish(Termination::kReachedEnd, options.t_end, "reached t_end = " + Num(options.t_end), state);
    }
    // The projection method: back inside the set the exact flow keeps, then restart the stepper
    // there (its dense output and FSAL derivative belong to the unprojected state).
    if (options.project) {
      projected = x1;
      const double moved = system.Project(&projected, std::max(options.abs_tol, kProjectionFloor));
      if (moved > 0) {
        ++summary.projections;
        summary.largest_projection = std::max(summary.largest_projection, moved);
        driver->Initialize(projected, t1, driver->StepSize());
      }
    }
    if (control.progress) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_progress > std::chrono::milliseconds(250)) {
        last_progress = now;
        control.progress(t1, options.t_end);
      }
    }
  }
}

}  // namespace moeflow
