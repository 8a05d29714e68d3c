// The only file that names Boost.Odeint types: steppers chosen by name, wrapped behind
// SteppingDriver.
#include <boost/numeric/odeint.hpp>
#include <boost/numeric/odeint/external/eigen/eigen.hpp>
#include <cmath>
#include <sstream>
#include <string>

#include "integrate/stepping_driver.hpp"

namespace moeflow::detail {
namespace {

namespace odeint = boost::numeric::odeint;
using State = Eigen::VectorXd;
using Algebra = odeint::vector_space_algebra;
using Dopri5 = odeint::runge_kutta_dopri5<State, double, State, double, Algebra>;
using CashKarp54 = odeint::runge_kutta_cash_karp54<State, double, State, double, Algebra>;
using Fehlberg78 = odeint::runge_kutta_fehlberg78<State, double, State, double, Algebra>;
using BulirschStoer = odeint::bulirsch_stoer_dense_out<State, double, State, double, Algebra>;

// Steppers with an interpolating dense output (dopri5's continuous extension, and the
// Bulirsch-Stoer extrapolation polynomial).
template <class Dense>
class DenseDriver final : public SteppingDriver {
 public:
  DenseDriver(Dense stepper, SystemFunction system)
      : stepper_(std::move(stepper)), system_(std::move(system)) {}

  void Initialize(const State& x0, double t0, double dt0) override { stepper_.initialize(x0, t0, dt0); }
  void Step() override {
    try {
      stepper_.do_step(std::ref(system_));
    } catch (const odeint::odeint_error& e) {
      std::ostringstream message;
      message << "no acceptable step size found after t = " << stepper_.current_time() << " (" << e.what() << ")";
      throw StepSizeUnderflow(message.str());
    }
  }
  double PreviousTime() const override { return stepper_.previous_time(); }
  double CurrentTime() const override { return stepper_.current_time(); }
  const State& CurrentState() const override { return stepper_.current_state(); }
  double StepSize() const override { return stepper_.current_time_step(); }
  void StateAt(double t, State* x) override { stepper_.calc_state(t, *x); }

 private:
  Dense stepper_;
  SystemFunction system_;
};

// Controlled steppers without an interpolant: the state inside an accepted step is one step
// of the same scheme from the start of that step, exact to the scheme's order.
template <class ErrorStepper>
class ControlledDriver final : public SteppingDriver {
 public:
  ControlledDriver(double abs_tol, double rel_tol, double dt_min, SystemFunction system)
      : controlled_(odeint::make_controlled(abs_tol, rel_tol, ErrorStepper())),
        system_(std::move(system)),
        dt_min_(dt_min) {}

  void Initialize(const State& x0, double t0, double dt0) override {
    x_ = x0;
    x_previous_ = x0;
    t_ = t_previous_ = t0;
    dt_ = dt0;
  }
  void Step() override {
    x_previous_ = x_;
    t_previous_ = t_;
    while (controlled_.try_step(std::ref(system_), x_, t_, dt_) == odeint::fail) {
      if (!(dt_ >= dt_min_ * std::max(1.0, std::abs(t_)))) {
        std::ostringstream message;
        message << "rejected step size " << dt_ << " < dt_min * max(1, |t|) = "
                << dt_min_ * std::max(1.0, std::abs(t_)) << " at t = " << t_;
        throw StepSizeUnderflow(message.str());
      }
    }
  }
  double PreviousTime() const override { return t_previous_; }
  double CurrentTime() const override { return t_; }
  const State& CurrentState() const override { return x_; }
  double StepSize() const override { return dt_; }
  void StateAt(double t, State* x) override {
    if (t == t_) {
      *x = x_;
      return;
    }
    if (t == t_previous_) {
      *x = x_previous_;
      return;
    }
    x->resize(x_.size());
    controlled_.stepper().do_step(std::ref(system_), x_previous_, t_previous_, *x, t - t_previous_);
  }

 private:
  odeint::controlled_runge_kutta<ErrorStepper> controlled_;
  SystemFunction system_;
  double dt_min_;
  State x_, x_previous_;
  double t_ = 0, t_previous_ = 0, dt_ = 0;
};

}  // namespace

std::unique_ptr<SteppingDriver> MakeSteppingDriver(const IntegratorOptions& o, SystemFunction system) {
  switch (o.stepper) {
    case StepperType::kDopri5: {
      auto dense = odeint::make_dense_output(o.abs_tol, o.rel_tol, Dopri5());
      return std::make_unique<DenseDriver<decltype(dense)>>(std::move(dense), std::move(system));
    }
    case StepperType::kBulirschStoer:
      return std::make_unique<DenseDriver<BulirschStoer>>(BulirschStoer(o.abs_tol, o.rel_tol),
                                                          std::move(system));
    case StepperType::kCashKarp54:
      return std::make_unique<ControlledDriver<CashKarp54>>(o.abs_tol, o.rel_tol, o.dt_min,
                                                            std::move(system));
    case StepperType::kFehlberg78:
      return std::make_unique<ControlledDriver<Fehlberg78>>(o.abs_tol, o.rel_tol, o.dt_min,
                                                            std::move(system));
  }
  return nullptr;
}

}  // namespace moeflow::detail
