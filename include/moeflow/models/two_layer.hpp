// moeflow/models/two_layer.hpp
// Teacher-student two-layer networks as an ODE over the Gram matrix of their vectors
// (theory.md §1):
//   student f(x) = sum_i a σ(w_i·x),  i = 1..p,     teacher y = sum_l a* σ*(w*_l·x) + noise,
// teacher vectors orthonormal, student vectors on the unit sphere (spherical gradient flow).
// The single-index model (theory.md §3.1) is p = k = 1.
//
// The drift is built by one general mechanism: the risk is a function R(Ω) of the Gram
// matrix Ω = U Uᵀ of all vectors (students first, then teachers), G = ∂R/∂Ω, and
//   ∇_{u_a} R · u_b = D_ab,  D = 2 G Ω,
//   d(u_a·u_b)/dt = -Λ (D_ab - D_aa Ω_ab)  [+ the same with a and b swapped if b is a student],
// where the D_aa term is the projection on the sphere's tangent space. With unit-variance
// projections the pair expectations are Mehler series, E[σ(h_a)τ(h_b)] = Σ_k c_k(σ)c_k(τ) Ω_ab^k.
#pragma once

#include <Eigen/Core>
#include <vector>

#include "moeflow/integrate/flow_system.hpp"
#include "moeflow/links/link.hpp"

namespace moeflow {

struct UnitBlock {
  int units = 1;
  LinkPtr link;         // σ
  double weight = 1.0;  // second-layer weight of every unit (fixed)
};

struct TwoLayerSpec {
  UnitBlock student;
  UnitBlock teacher;
  double noise_variance = 0.0;  // label noise σ²; adds σ²/2 to the risk
  double learning_rate = 1.0;   // multiplier Λ of the student vectors' gradient flow
};

// E[σ(z1) τ(z2)] for standard normals with correlation ρ, as a truncated Mehler series.
class MehlerKernel {
 public:
  MehlerKernel(const Link& sigma, const Link& tau, int max_order);
  double Value(double rho) const;
  double Derivative(double rho) const;  // d/dρ
  double AtOne() const { return at_one_; }

 private:
  std::vector<double> products_;  // c_k(σ) c_k(τ)
  double at_one_ = 0.0;
};

class TwoLayerFlow final : public FlowSystem {
 public:
  explicit TwoLayerFlow(TwoLayerSpec spec);

  int students() const { return p_; }
  int teachers() const { return k_; }
  int vectors() const { return p_ + k_; }

  // The state holds the student rows of Ω: Q (upper triangle, row by row) then M (p x k).
  Eigen::VectorXd Pack(const Eigen::MatrixXd& gram) const;
  // The full (p+k) x (p+k) Gram matrix (teacher block: identity).
  Eigen::MatrixXd Unpack(const Eigen::VectorXd& x) const;

  double Risk(const Eigen::MatrixXd& gram) const;
  // G = ∂R/∂Ω off the diagonal (the diagonal is fixed on the sphere).
  Eigen::MatrixXd RiskGradient(const Eigen::MatrixXd& gram) const;
  // dΩ/dt for the student rows, as a full symmetric matrix (teacher block zero).
  Eigen::MatrixXd GramDrift(const Eigen::MatrixXd& gram) const;

  int StateSize() const override;
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override;
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override;
  std::string CheckInvariants(const Eigen::VectorXd& x) const override;

 private:
  const MehlerKernel& Kernel(int a, int b) const;
  double Sign(int a) const;  // +a for students, -a* for teachers

  TwoLayerSpec spec_;
  int p_, k_;
  MehlerKernel ss_, st_, tt_;
  std::vector<ObservableInfo> observables_;
};

// Maximum Hermite order of the Mehler series for non-polynomial links.
inline constexpr int kMehlerMaxOrder = 60;

}  // namespace moeflow
