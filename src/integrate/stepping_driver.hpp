// Internal: one interface over Boost.Odeint's steppers, so the integration loop is written
// once. steppers.cpp is the only file that names odeint types.
#pragma once

#include <Eigen/Core>
#include <functional>
#include <memory>
#include <stdexcept>

#include "moeflow/integrate/integrator.hpp"

namespace moeflow::detail {

using SystemFunction = std::function<void(const Eigen::VectorXd&, Eigen::VectorXd&, double)>;

// Thrown when no acceptable step size can be found (odeint gave up, or dt < dt_min).
class StepSizeUnderflow : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class SteppingDriver {
 public:
  virtual ~SteppingDriver() = default;
  virtual void Initialize(const Eigen::VectorXd& x0, double t0, double dt0) = 0;
  // Advances by one accepted step. Throws StepSizeUnderflow.
  virtual void Step() = 0;
  virtual double PreviousTime() const = 0;
  virtual double CurrentTime() const = 0;
  virtual const Eigen::VectorXd& CurrentState() const = 0;
  // The step size the next Step() will try.
  virtual double StepSize() const = 0;
  // The state at t in [PreviousTime(), CurrentTime()] from the stepper's dense output.
  virtual void StateAt(double t, Eigen::VectorXd* x) = 0;
};

std::unique_ptr<SteppingDriver> MakeSteppingDriver(const IntegratorOptions& options,
                                                   SystemFunction system);

}  // namespace moeflow::detail
