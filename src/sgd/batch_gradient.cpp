#include "sgd/batch_gradient.hpp"
#include <algorithm>

namespace moeflow {

BatchGradient::BatchGradient(const TwoLayerFlow& model)
    : spec_(model.spec()), p_(model.students()), n_(model.vectors()), weights_(model.StudentWeights()),
      student_(spec_.student, 0, spec_.student.HasRouters() ? spec_.student.ExpertVectors() : -1),
      teacher_(spec_.teacher, p_, spec_.teacher.HasRouters() ? p_ + spec_.teacher.ExpertVectors() : -1),
      row_(static_cast<std::size_t>(n_)), grad_(static_cast<std::size_t>(n_)) {
  for (int c = 0; c < std::max(1, model.cluster_means()); ++c) teacher_weights_.push_back(model.TeacherWeights(c));
}

void BatchGradient::Labels(const Eigen::MatrixXd& h, const Eigen::VectorXd& noise, const std::vector<int>& clusters,
                           Eigen::VectorXd* out) const {
  Eigen::VectorXd& y = *out;
  y = noise;
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    for (int a = p_; a < n_; ++a) row_[a] = h(b, a);
    const std::vector<double>& weights = teacher_weights_[clusters.empty() ? 0 : clusters[b]];
    y[b] += teacher_.Evaluate(row_.data(), weights.data(), nullptr, &scratch_);
  }
}

double BatchGradient::StudentOutput(const Eigen::MatrixXd& hbar, Eigen::Index b, bool gradient) const {
  for (int a = 0; a < p_; ++a) row_[a] = hbar(b, a);
  return student_.Evaluate(row_.data(), weights_.data(), gradient ? grad_.data() : nullptr, &scratch_);
}

void BatchGradient::Compute(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y,
                            Eigen::MatrixXd* hbar, Eigen::VectorXd* residual, Eigen::MatrixXd* g) const {
  *hbar = h;
  for (int i = 0; i < p_; ++i) hbar->col(i) /= norms[i];
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    const double r = StudentOutput(*hbar, b, true) - y[b];
    (*residual)[b] = r;
    for (int a = 0; a < p_; ++a) (*g)(b, a) = r * grad_[a];
  }
}

void BatchGradient::WeightGradient(const Eigen::MatrixXd& hbar, const Eigen::VectorXd& residual,
                                   Eigen::VectorXd* out) const {
  const int units = static_cast<int>(weights_.size());
  out->setZero(units);
  std::vector<double> phi(static_cast<std::size_t>(units));  // ∂f/∂a_i (0 for a pruned unit)
  for (Eigen::Index b = 0; b < hbar.rows(); ++b) {
    for (int a = 0; a < p_; ++a) row_[a] = hbar(b, a);
    student_.UnitOutputs(row_.data(), weights_.data(), phi.data(), &scratch_);
    for (int i = 0; i < units; ++i) (*out)[i] += residual[b] * phi[i];
  }
}

double BatchGradient::Risk(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y) const {
  Eigen::MatrixXd hbar = h;
  for (int i = 0; i < p_; ++i) hbar.col(i) /= norms[i];
  double sum = 0.0;
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    const double r = StudentOutput(hbar, b, false) - y[b];
    sum += r * r;
  }
  return 0.5 * sum / static_cast<double>(h.rows());
}

}  // namespace moeflow
