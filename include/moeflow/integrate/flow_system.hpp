// moeflow/integrate/flow_system.hpp
// The System concept of the integrators, type-erased: an autonomous ODE dx/dt = F(x) over a
// flat state vector, plus the observables recorded along a trajectory. A model (order
// parameters, risk, drift) implements it; the integrators know nothing else about models.
#pragma once

#include <Eigen/Core>
#include <string>
#include <vector>

namespace moeflow {

// One observable: a rows x cols matrix (1 x 1 for a scalar), stored row-major. Matrices are
// written as time x rows x cols datasets; scalars and vectors (cols == 1) as time or
// time x rows (a one-element vector as time).
struct ObservableInfo {
  std::string name;
  int rows = 1;
  int cols = 1;
  std::string description;
  bool is_matrix = false;

  int size() const { return rows * cols; }
};

class FlowSystem {
 public:
  virtual ~FlowSystem() = default;

  virtual int StateSize() const = 0;

  // dxdt = F(x). Must not allocate in the hot path if it can avoid it.
  virtual void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const = 0;

  // The observables, in the order Observe() writes them.
  virtual const std::vector<ObservableInfo>& Observables() const = 0;

  // Writes every observable at state x, concatenated in Observables() order.
  virtual void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const = 0;

  // Observe() for the observables i with wanted[i] (one flag per Observables() entry): the
  // others may hold any value. A system skips its costly observables with it (a risk computed
  // over points); the integrators call it where only events read the values. The default writes
  // them all.
  virtual void ObserveSome(const Eigen::VectorXd& x, const std::vector<bool>& /*wanted*/,
                           Eigen::VectorXd* values) const {
    Observe(x, values);
  }

  // Empty if x satisfies the model's invariants (e.g. a PSD Gram matrix); otherwise a
  // message with the numbers that violate them.
  virtual std::string CheckInvariants(const Eigen::VectorXd& /*x*/) const { return {}; }

  // The projection step of a projection method (Hairer, Lubich & Wanner, Geometric Numerical
  // Integration, §IV.4): if integration error has moved x outside the set the exact flow keeps
  // (e.g. the PSD cone of a Gram matrix) by more than `tolerance`, replace x by a nearby state
  // inside it and return the size max_i |Δx_i| of the change; otherwise leave x alone and
  // return 0. The integrator calls it after every accepted step (integrate.project).
  virtual double Project(Eigen::VectorXd* /*x*/, double /*tolerance*/) const { return 0.0; }
};

// Total number of values Observe() writes, and the offset of each observable in them.
int ObservableValueCount(const std::vector<ObservableInfo>& observables);
std::vector<int> ObservableOffsets(const std::vector<ObservableInfo>& observables);

}  // namespace moeflow
