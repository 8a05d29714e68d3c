#include "sgd/batch_gradient.hpp"

namespace moeflow {

BatchGradient::BatchGradient(const TwoLayerFlow& model)
    : spec_(model.spec()), ps_(spec_.student.units), kt_(spec_.teacher.units), p_(model.students()),
      weights_(model.StudentWeights()) {}

void BatchGradient::Labels(const Eigen::MatrixXd& h, const Eigen::VectorXd& noise, Eigen::VectorXd* out) const {
  Eigen::VectorXd& y = *out;
  y = noise;
  const Link& sigma = *spec_.teacher.link;
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    double sum = 0.0;
    for (int l = 0; l < kt_; ++l) {
      const double expert = sigma.Value(h(b, p_ + l));
      sum += spec_.teacher.gate ? spec_.teacher.gate->Value(h(b, p_ + kt_ + l)) * expert : expert;
    }
    y[b] += spec_.teacher.weight * sum;
  }
}

double BatchGradient::StudentOutput(const Eigen::MatrixXd& hbar, Eigen::Index b) const {
  double f = 0.0;
  for (int i = 0; i < ps_; ++i) {
    if (weights_[i] == 0.0) continue;
    const double expert = spec_.student.link->Value(hbar(b, i));
    f += weights_[i] * (spec_.student.gate ? spec_.student.gate->Value(hbar(b, ps_ + i)) * expert : expert);
  }
  return f;
}

void BatchGradient::Compute(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y,
                            Eigen::MatrixXd* hbar, Eigen::VectorXd* residual, Eigen::MatrixXd* g) const {
  *hbar = h;
  for (int i = 0; i < p_; ++i) hbar->col(i) /= norms[i];
  const Link& sigma = *spec_.student.link;
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    const double r = StudentOutput(*hbar, b) - y[b];
    (*residual)[b] = r;
    for (int i = 0; i < ps_; ++i) {
      const double a = weights_[i];
      const double z = (*hbar)(b, i);
      if (spec_.student.gate) {
        const double gate = spec_.student.gate->Value((*hbar)(b, ps_ + i));
        (*g)(b, i) = r * a * gate * sigma.Derivative(z);
        (*g)(b, ps_ + i) = r * a * spec_.student.gate->Derivative((*hbar)(b, ps_ + i)) * sigma.Value(z);
      } else {
        (*g)(b, i) = r * a * sigma.Derivative(z);
      }
    }
  }
}

double BatchGradient::Risk(const Eigen::MatrixXd& h, const Eigen::VectorXd& norms, const Eigen::VectorXd& y) const {
  Eigen::MatrixXd hbar = h;
  for (int i = 0; i < p_; ++i) hbar.col(i) /= norms[i];
  double sum = 0.0;
  for (Eigen::Index b = 0; b < h.rows(); ++b) {
    const double r = StudentOutput(hbar, b) - y[b];
    sum += r * r;
  }
  return 0.5 * sum / static_cast<double>(h.rows());
}

}  // namespace moeflow
