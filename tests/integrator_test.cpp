// The integration loop on systems with known solutions: grid output, events, outcomes.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <stdexcept>

#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::RelativeError;

// A one-dimensional system dx/dt = f(x), observed as "x".
class ScalarSystem final : public FlowSystem {
 public:
  explicit ScalarSystem(std::function<double(double)> f) : f_(std::move(f)) {}
  int StateSize() const override { return 1; }
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override {
    dxdt.resize(1);
    dxdt[0] = f_(x[0]);
  }
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override { *values = x; }

 private:
  std::function<double(double)> f_;
  std::vector<ObservableInfo> observables_{{"x", 1, 1, "the state"}};
};

constexpr double kDenseOutputTol = 1e-9;  // dopri5 dense output at rel_tol 1e-10 vs exp(-t)

IntegratorOptions Options(double t_end) {
  IntegratorOptions o;
  o.t_end = t_end;
  o.output_times = MakeTimeGrid("linear", 10, 0.0, t_end);
  return o;
}

TEST(Integrator, GridRowsAreAtTheRequestedTimesAndMatchTheSolution) {
  const ScalarSystem decay([](double x) { return -x; });
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), Options(3.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kReachedEnd);
  ASSERT_EQ(trajectory.time.size(), 11u);
  for (std::size_t r = 0; r < trajectory.time.size(); ++r) {
    EXPECT_DOUBLE_EQ(trajectory.time[r], 0.3 * static_cast<double>(r));
    EXPECT_LT(RelativeError(trajectory.values[r][0], std::exp(-trajectory.time[r])), kDenseOutputTol);
  }
}

TEST(Integrator, EveryStepOutputAddsTheAcceptedStepsInOrder) {
  const ScalarSystem decay([](double x) { return -x; });
  IntegratorOptions o = Options(3.0);
  o.output_every_step = true;
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
  EXPECT_GT(trajectory.time.size(), 11u);
  EXPECT_LE(trajectory.time.size(), 11u + static_cast<std::size_t>(summary.accepted_steps));
  for (std::size_t r = 1; r < trajectory.time.size(); ++r) EXPECT_LT(trajectory.time[r - 1], trajectory.time[r]);
}

TEST(Integrator, EventIsLocatedOnTheDenseOutputForEveryStepper) {
  const ScalarSystem decay([](double x) { return -x; });
  for (const std::string& name : StepperNames()) {
    IntegratorOptions o = Options(10.0);
    ASSERT_TRUE(FromString(name, &o.stepper));
    EventSpec half{"half", "x", Comparison::kLessEqual, 0.5, true};
    Trajectory trajectory;
    const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {half}, &trajectory);
    EXPECT_EQ(summary.termination, Termination::kStoppedOnEvent) << name;
    ASSERT_TRUE(summary.events[0].occurred) << name;
    EXPECT_LT(RelativeError(summary.events[0].time, std::log(2.0)), kDenseOutputTol) << name;
    EXPECT_DOUBLE_EQ(trajectory.time.back(), summary.events[0].time) << name;  // the last row is the event
  }
}

TEST(Integrator, NonStoppingEventsAreAllRecordedInTheirOrder) {
  const ScalarSystem growth([](double x) { return x; });
  std::vector<EventSpec> events = {{"e2", "x", Comparison::kGreaterEqual, 2.0, false},
                                   {"e4", "x", Comparison::kGreaterEqual, 4.0, false},
                                   {"never", "x", Comparison::kLess, 0.0, false}};
  Trajectory trajectory;
  const RunSummary summary = Integrate(growth, Eigen::VectorXd::Constant(1, 1.0), Options(2.0), events, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kReachedEnd);
  EXPECT_LT(RelativeError(summary.events[0].time, std::log(2.0)), kDenseOutputTol);
  EXPECT_LT(RelativeError(summary.events[1].time, std::log(4.0)), kDenseOutputTol);
  EXPECT_FALSE(summary.events[2].occurred);
  EXPECT_TRUE(std::isnan(summary.events[2].time));
}

// x' = −x observed as "x" and a costly "x2" = x², which ObserveSome computes only when wanted
// (counted), writing 0 otherwise.
class CostlyObservableSystem final : public FlowSystem {
 public:
  int StateSize() const override { return 1; }
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override { dxdt = -x; }
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override { ObserveSome(x, {true, true}, values); }
  void ObserveSome(const Eigen::VectorXd& x, const std::vector<bool>& wanted, Eigen::VectorXd* values) const override {
    values->resize(2);
    (*values)[0] = x[0];
    (*values)[1] = wanted.at(1) ? (++costly, x[0] * x[0]) : 0.0;
  }
  mutable int costly = 0;

 private:
  std::vector<ObservableInfo> observables_{{"x", 1, 1, "the state"}, {"x2", 1, 1, "the state squared"}};
};

// Between recorded rows the integrator asks only for what the pending events read
// (FlowSystem::ObserveSome). Reference: the exact event times ln 2 (x = 1/2), ln 10 (x² = 1/100)
// and ln 20 (x = 1/20), to the dense-output tolerance.
//   - An event on x alone: x2 is computed at the 11 recorded rows only, and is right there.
//   - An event on x2: it is checked and located (x2 computed at the steps), and once it has
//     happened x2 is no longer computed between rows, though a later x event is still checked.
TEST(Integrator, EventChecksComputeOnlyTheObservablesThatPendingEventsRead) {
  {
    const CostlyObservableSystem system;
    Trajectory trajectory;
    const RunSummary summary =
        Integrate(system, Eigen::VectorXd::Constant(1, 1.0), Options(3.0),
                  {{"half", "x", Comparison::kLessEqual, 0.5, false}}, &trajectory);
    ASSERT_TRUE(summary.events[0].occurred);
    EXPECT_LT(RelativeError(summary.events[0].time, std::log(2.0)), kDenseOutputTol);
    ASSERT_EQ(trajectory.time.size(), 11u);
    EXPECT_EQ(system.costly, 11) << "x2 computed outside the recorded rows";
    for (std::size_t r = 0; r < trajectory.time.size(); ++r) {
      EXPECT_LT(RelativeError(trajectory.values[r][1], std::exp(-2 * trajectory.time[r])), kDenseOutputTol);
    }
  }
  const CostlyObservableSystem alone, with_later;
  const std::vector<EventSpec> squared = {{"small", "x2", Comparison::kLessEqual, 0.01, false}};
  std::vector<EventSpec> both = squared;
  both.push_back({"tiny", "x", Comparison::kLessEqual, 0.05, false});
  Trajectory trajectory;
  const RunSummary a = Integrate(alone, Eigen::VectorXd::Constant(1, 1.0), Options(4.0), squared, &trajectory);
  ASSERT_TRUE(a.events[0].occurred);
  EXPECT_LT(RelativeError(a.events[0].time, std::log(10.0)), kDenseOutputTol);
  EXPECT_GT(alone.costly, 11 + 10) << "the x2 event was checked at the steps and located by bisection";
  const RunSummary b = Integrate(with_later, Eigen::VectorXd::Constant(1, 1.0), Options(4.0), both, &trajectory);
  ASSERT_TRUE(b.events[0].occurred && b.events[1].occurred);
  EXPECT_LT(RelativeError(b.events[0].time, std::log(10.0)), kDenseOutputTol);
  EXPECT_LT(RelativeError(b.events[1].time, std::log(20.0)), kDenseOutputTol);
  // The same steps (events do not change them) and rows: the x checks after ln 10 cost no x2.
  EXPECT_EQ(b.accepted_steps, a.accepted_steps);
  EXPECT_EQ(with_later.costly, alone.costly);
}

TEST(Integrator, BlowUpIsReportedAsDivergenceWithNumbers) {
  const ScalarSystem blowup([](double x) { return x * x; });  // x = 1/(1 - t)
  Trajectory trajectory;
  const RunSummary summary = Integrate(blowup, Eigen::VectorXd::Constant(1, 1.0), Options(2.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kDiverged);
  EXPECT_FALSE(summary.Ok());
  EXPECT_LT(summary.t_final, 1.0);
  EXPECT_NE(summary.message.find("divergence threshold 1e+08"), std::string::npos) << summary.message;
}

TEST(Integrator, NanInTheDriftIsReportedAsNotFinite) {
  const ScalarSystem bad([](double x) { return x > 2.0 ? std::nan("") : 1.0; });
  Trajectory trajectory;
  const RunSummary summary = Integrate(bad, Eigen::VectorXd::Constant(1, 1.0), Options(5.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kNotFinite) << summary.message;
  EXPECT_NE(summary.message.find("nan"), std::string::npos) << summary.message;
}

TEST(Integrator, ASingularityIsReportedAsStepSizeUnderflow) {
  // dx/dt = -1/x from x = 1: x = sqrt(1 - 2t) reaches 0 with infinite slope at t = 1/2.
  const ScalarSystem singular([](double x) { return -1.0 / x; });
  for (const std::string& name : StepperNames()) {
    IntegratorOptions o = Options(1.0);
    ASSERT_TRUE(FromString(name, &o.stepper));
    Trajectory trajectory;
    const RunSummary summary = Integrate(singular, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
    EXPECT_EQ(summary.termination, Termination::kStepUnderflow) << name << ": " << summary.message;
    EXPECT_LE(summary.t_final, 0.5 + 1e-6) << name << ": " << summary.message;
    std::cout << name << ": " << ToString(summary.termination) << ": " << summary.message << "\n";
  }
}

// A system whose one observable is a 2000 x 2000 matrix (4e6 values a row); it fails the test
// if it is ever evaluated.
class HugeObservableSystem final : public FlowSystem {
 public:
  int StateSize() const override { return 1; }
  void Drift(const Eigen::VectorXd&, Eigen::VectorXd&) const override { throw std::logic_error("Drift called"); }
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd&, Eigen::VectorXd*) const override { throw std::logic_error("Observe called"); }

 private:
  std::vector<ObservableInfo> observables_{{"big", 2000, 2000, "a large matrix", true}};
};

// A grid whose trajectory cannot fit in memory is rejected before the run, with the numbers:
// 10^6 + 1 rows of 4e6 values are 2.9e4 GiB, more than any machine this runs on.
TEST(Integrator, ATrajectoryTooLargeForTheMemoryIsRejectedBeforeTheRun) {
  const HugeObservableSystem system;
  IntegratorOptions o;
  o.t_end = 1.0;
  o.output_times = MakeTimeGrid("linear", 1'000'000, 0.0, o.t_end);
  Trajectory trajectory;
  try {
    Integrate(system, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
    ADD_FAILURE() << "a trajectory of 2.9e4 GiB was accepted";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("key 'output.points': a trajectory of 1000001 rows of 4000000 values needs 2.98e+04 GiB, "
                           "more than this machine's memory ("),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("GiB): lower output.points"), std::string::npos) << message;
  }
}

TEST(Integrator, MaxStepsStopsTheRun) {
  const ScalarSystem decay([](double x) { return -x; });
  IntegratorOptions o = Options(100.0);
  o.max_steps = 3;
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kMaxSteps);
  EXPECT_EQ(summary.accepted_steps, 3);
}

TEST(Integrator, InterruptFlagStopsTheRun) {
  const ScalarSystem decay([](double x) { return -x; });
  std::atomic<bool> interrupt{true};
  Trajectory trajectory;
  IntegrationControl control;
  control.interrupt = &interrupt;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), Options(1.0), {}, &trajectory, control);
  EXPECT_EQ(summary.termination, Termination::kInterrupted);
}

// The harmonic oscillator x' = −y, y' = x from (1, 0): the exact flow keeps the unit circle, and
// Project puts a state whose |r² − 1| exceeds the tolerance back on it (along the ray).
class CircleSystem final : public FlowSystem {
 public:
  int StateSize() const override { return 2; }
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override {
    dxdt.resize(2);
    dxdt << -x[1], x[0];
  }
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override { *values = x; }
  double Project(Eigen::VectorXd* x, double tolerance) const override {
    if (!(std::abs(x->squaredNorm() - 1) > tolerance)) return 0.0;
    const Eigen::VectorXd before = *x;
    x->normalize();
    return (*x - before).cwiseAbs().maxCoeff();
  }

 private:
  std::vector<ObservableInfo> observables_{{"x", 2, 1, "the state"}};
};

// The projection method (integrate.project) on the circle, for every stepper, at tolerance 1e-6
// over t = 300 (48 periods). Reference: the exact solution (cos t, sin t). Without projection the
// radius drifts by more than 10 tolerances (the control); with it every recorded row (dense output
// inside a step started on the circle included) is within 2 tolerances of the circle, the steps
// ended off the circle are counted with their largest change (a few tolerances), and the phase
// error is no larger than without projection.
TEST(Integrator, ProjectionKeepsTheInvariantSetAndCountsTheProjections) {
  const CircleSystem circle;
  constexpr double kTol = 1e-6;
  for (const std::string& name : StepperNames()) {
    auto run = [&](bool project, Trajectory* trajectory) {
      IntegratorOptions o;
      ASSERT_TRUE(FromString(name, &o.stepper));
      o.abs_tol = o.rel_tol = kTol;
      o.t_end = 300;
      o.output_times = MakeTimeGrid("linear", 600, 0.0, o.t_end);
      o.project = project;
      const RunSummary summary = Integrate(circle, Eigen::Vector2d(1, 0), o, {}, trajectory);
      ASSERT_EQ(summary.termination, Termination::kReachedEnd) << name << ": " << summary.message;
      if (project) {
        EXPECT_GT(summary.projections, 0) << name;
        EXPECT_LT(summary.largest_projection, 10 * kTol) << name;
      } else {
        EXPECT_EQ(summary.projections, 0) << name;
      }
    };
    Trajectory plain, projected;
    run(false, &plain);
    run(true, &projected);
    ASSERT_EQ(plain.time.size(), projected.time.size());
    double plain_radius = 0, projected_radius = 0, plain_phase = 0, projected_phase = 0;
    for (std::size_t r = 0; r < plain.time.size(); ++r) {
      const double t = plain.time[r];
      const Eigen::Vector2d exact(std::cos(t), std::sin(t));
      plain_radius = std::max(plain_radius, std::abs(plain.values[r].norm() - 1));
      projected_radius = std::max(projected_radius, std::abs(projected.values[r].norm() - 1));
      plain_phase = std::max(plain_phase, (plain.values[r] - exact).norm());
      projected_phase = std::max(projected_phase, (projected.values[r] - exact).norm());
    }
    std::cout << name << ": radius error plain " << plain_radius << ", projected " << projected_radius
              << "; distance to (cos t, sin t) plain " << plain_phase << ", projected " << projected_phase << "\n";
    EXPECT_GT(plain_radius, 10 * kTol) << name << " (control)";
    EXPECT_LT(projected_radius, 2 * kTol) << name;
    EXPECT_LE(projected_phase, plain_phase) << name;
  }
}

TEST(IntegratorOptions, DefaultsAreValidAndBadValuesNameTheKey) {
  IntegratorOptions o;
  EXPECT_NO_THROW(o.Validate());
  o.rel_tol = -1;
  try {
    o.Validate();
    FAIL() << "negative rel_tol accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("key 'integrate.rel_tol': value '-1'"), std::string::npos) << e.what();
  }
  o = IntegratorOptions();
  o.t_end = 0;
  EXPECT_THROW(o.Validate(), InputError);
}

TEST(ObservableSelector, BadExpressionsAreRejectedWithTheKnownObservables) {
  const std::vector<ObservableInfo> obs = {{"risk", 1, 1, ""}, {"Q", 2, 2, "", true}, {"m", 3, 1, ""}};
  EXPECT_NO_THROW(ObservableSelector("Q[1,0]", obs, "k"));
  EXPECT_NO_THROW(ObservableSelector("m[2]", obs, "k"));
  EXPECT_NO_THROW(ObservableSelector("max(Q)", obs, "k"));
  EXPECT_THROW(ObservableSelector("Q", obs, "k"), InputError);      // a matrix needs an element
  EXPECT_THROW(ObservableSelector("Q[2,0]", obs, "k"), InputError); // out of range
  EXPECT_THROW(ObservableSelector("m[3]", obs, "k"), InputError);
  EXPECT_THROW(ObservableSelector("nope", obs, "k"), InputError);
  EXPECT_THROW(ObservableSelector("m +", obs, "k"), InputError);
  Eigen::VectorXd values(8);
  values << 0.5, 1, 2, 3, 4, -7, 0.1, 0.2;
  EXPECT_EQ(ObservableSelector("Q[1,0]", obs, "k").Evaluate(values), 3);
  EXPECT_EQ(ObservableSelector("maxabs(m)", obs, "k").Evaluate(values), 7);
  EXPECT_EQ(ObservableSelector("min(Q)", obs, "k").Evaluate(values), 1);
  // Ranges of a vector: elements i..j-1 (m = -7, 0.1, 0.2).
  EXPECT_EQ(ObservableSelector("max(m[1:3])", obs, "k").Evaluate(values), 0.2);
  EXPECT_EQ(ObservableSelector("maxabs(m[0:2])", obs, "k").Evaluate(values), 7);
  EXPECT_EQ(ObservableSelector("min(m[1:2])", obs, "k").Evaluate(values), 0.1);
  EXPECT_THROW(ObservableSelector("max(m[2:2])", obs, "k"), InputError);  // empty
  EXPECT_THROW(ObservableSelector("max(m[1:4])", obs, "k"), InputError);  // past the end
  EXPECT_THROW(ObservableSelector("max(Q[0:2])", obs, "k"), InputError);  // not a vector
}

}  // namespace
}  // namespace moeflow
