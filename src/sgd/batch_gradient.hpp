// The per-sample side of SGD: labels, residuals and the gradients ∂ℓ/∂h of ℓ = ½(f − y)² with
// respect to the projections, for a batch of projections H (B × n, the model's vector order:
// student experts, student routers, teacher experts, teacher routers).
#pragma once

#include <Eigen/Core>

#include <vector>

#include "models/unit_output.hpp"
#include "moeflow/models/two_layer.hpp"

namespace moeflow {

class BatchGradient {
 public:
  explicit BatchGradient(const TwoLayerFlow& model);

  // y = the teacher's output (models/unit_output.hpp) + noise (teacher vectors have unit norm);
  // with input clusters, sample b's teacher weights are those of cluster clusters[b].
  void Labels(const Eigen::MatrixXd& h, const Eigen::VectorXd& noise, const std::vector<int>& clusters,
              Eigen::VectorXd* y) const;

  // With h̄ = H with the student columns divided by `norms` (ones unless normalised):
  // residual F = f(h̄) − y and g (B × p) = ∂ℓ/∂h̄ = F ∂f/∂h̄ (e.g. F a π(r_i) σ'(h_i) for the
  // expert of a gated unit i, F a π'(r_i) σ(h_i) for its router).
  void Compute(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y,
               Eigen::MatrixXd* hbar, Eigen::VectorXd* residual, Eigen::MatrixXd* g) const;

  // The students' per-unit weights (pruning sets some to 0; trained weights move every step).
  void SetStudentWeights(const std::vector<double>& weights) { weights_ = weights; }
  // Σ_b F_b ∂f/∂a_i(h̄_b) for every unit i (trained second-layer weights): f is linear in the
  // weights, so ∂f/∂a_i is the output with weight 1 on unit i alone; a pruned unit (weight 0) gets 0.
  void WeightGradient(const Eigen::MatrixXd& hbar, const Eigen::VectorXd& residual, Eigen::VectorXd* out) const;
  // Not thread-safe (per-sample buffers): one per SGD run.

  // ½ mean (f(h̄) − y)²; h needs only the student columns (the labels y are given).
  double Risk(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y) const;

 private:
  // f at row b of h̄; with `gradient`, ∂f/∂h̄ in grad_.
  double StudentOutput(const Eigen::MatrixXd& hbar, Eigen::Index b, bool gradient) const;

  TwoLayerSpec spec_;
  int p_, n_;
  std::vector<double> weights_;
  std::vector<std::vector<double>> teacher_weights_;  // per cluster (one without clusters)
  BlockOutput student_, teacher_;
  mutable BlockOutput::Scratch scratch_;
  mutable std::vector<double> row_, grad_;
};

}  // namespace moeflow
