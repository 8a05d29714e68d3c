// The per-sample side of SGD: labels, residuals and the gradients ∂ℓ/∂h of ℓ = ½(f − y)² with
// respect to the projections, for a batch of projections H (B × n, the model's vector order:
// student experts, student routers, teacher experts, teacher routers).
#pragma once

#include <Eigen/Core>

#include "moeflow/models/two_layer.hpp"

namespace moeflow {

class BatchGradient {
 public:
  explicit BatchGradient(const TwoLayerFlow& model);

  // y = Σ_l a* π*(r*_l) σ*(h*_l) + noise (teacher vectors have unit norm).
  void Labels(const Eigen::MatrixXd& h, const Eigen::VectorXd& noise, Eigen::VectorXd* y) const;

  // With h̄ = H with the student columns divided by `norms` (ones unless normalised):
  // residual F = f(h̄) − y and g (B × p) = ∂ℓ/∂h̄: F a π(r_i) σ'(h_i) for expert i,
  // F a π'(r_i) σ(h_i) for router i.
  void Compute(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y,
               Eigen::MatrixXd* hbar, Eigen::VectorXd* residual, Eigen::MatrixXd* g) const;

  // The students' per-unit weights (pruning sets some to 0).
  void SetStudentWeights(const std::vector<double>& weights) { weights_ = weights; }

  // ½ mean (f(h̄) − y)².
  double Risk(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y) const;

 private:
  double StudentOutput(const Eigen::MatrixXd& hbar, Eigen::Index b) const;

  TwoLayerSpec spec_;
  int ps_, kt_, p_;
  std::vector<double> weights_;
};

}  // namespace moeflow
