#include "moeflow/models/two_layer.hpp"

#include <Eigen/Eigenvalues>
#include <cmath>
#include <sstream>

#include "moeflow/error.hpp"

namespace moeflow {
namespace {

int SeriesOrder(const Link& a, const Link& b) {
  const int da = a.PolynomialDegree(), db = b.PolynomialDegree();
  if (da >= 0 && db >= 0) return std::min(da, db);
  if (da >= 0) return da;
  if (db >= 0) return db;
  return kMehlerMaxOrder;
}

// Tolerances of the invariants watched during integration.
constexpr double kPsdTolerance = 1e-8;     // smallest eigenvalue of Ω may not go below -this
constexpr double kSphereTolerance = 1e-7;  // |‖w_i‖² - 1| on the sphere

}  // namespace

MehlerKernel::MehlerKernel(const Link& sigma, const Link& tau, int max_order) {
  const int order = std::min(SeriesOrder(sigma, tau), max_order);
  const std::vector<double> a = sigma.HermiteCoefficients(order);
  const std::vector<double> b = tau.HermiteCoefficients(order);
  products_.resize(static_cast<std::size_t>(order) + 1);
  for (int k = 0; k <= order; ++k) {
    products_[k] = a[k] * b[k];
    at_one_ += products_[k];
  }
}

double MehlerKernel::Value(double rho) const {
  double v = 0.0;
  for (std::size_t k = products_.size(); k-- > 0;) v = v * rho + products_[k];
  return v;
}

double MehlerKernel::Derivative(double rho) const {
  double v = 0.0;
  for (std::size_t k = products_.size(); k-- > 1;) v = v * rho + static_cast<double>(k) * products_[k];
  return v;
}

TwoLayerFlow::TwoLayerFlow(TwoLayerSpec spec)
    : spec_(std::move(spec)),
      p_(spec_.student.units),
      k_(spec_.teacher.units),
      ss_(*spec_.student.link, *spec_.student.link, kMehlerMaxOrder),
      st_(*spec_.student.link, *spec_.teacher.link, kMehlerMaxOrder),
      tt_(*spec_.teacher.link, *spec_.teacher.link, kMehlerMaxOrder) {
  observables_ = {
      {"risk", 1, 1, "population risk R = E[(f - y)^2]/2 (label noise included)"},
      {"m", k_, 1, "best student overlap with each teacher, max_i w_i·w*_l"},
      {"M", p_, k_, "student-teacher overlaps w_i·w*_l", true},
      {"Q", p_, p_, "student-student overlaps w_i·w_j", true},
  };
}

int TwoLayerFlow::StateSize() const { return p_ * (p_ + 1) / 2 + p_ * k_; }

Eigen::VectorXd TwoLayerFlow::Pack(const Eigen::MatrixXd& gram) const {
  Eigen::VectorXd x(StateSize());
  int n = 0;
  for (int i = 0; i < p_; ++i) {
    for (int j = i; j < p_; ++j) x[n++] = gram(i, j);
  }
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_; ++l) x[n++] = gram(i, p_ + l);
  }
  return x;
}

Eigen::MatrixXd TwoLayerFlow::Unpack(const Eigen::VectorXd& x) const {
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(vectors(), vectors());
  int n = 0;
  for (int i = 0; i < p_; ++i) {
    for (int j = i; j < p_; ++j) gram(i, j) = gram(j, i) = x[n++];
  }
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_; ++l) gram(i, p_ + l) = gram(p_ + l, i) = x[n++];
  }
  return gram;
}

const MehlerKernel& TwoLayerFlow::Kernel(int a, int b) const {
  const bool sa = a < p_, sb = b < p_;
  return sa && sb ? ss_ : (sa || sb ? st_ : tt_);
}

double TwoLayerFlow::Sign(int a) const { return a < p_ ? spec_.student.weight : -spec_.teacher.weight; }

double TwoLayerFlow::Risk(const Eigen::MatrixXd& gram) const {
  double r = 0.0;
  for (int a = 0; a < vectors(); ++a) {
    r += 0.5 * Sign(a) * Sign(a) * Kernel(a, a).AtOne();
    for (int b = a + 1; b < vectors(); ++b) r += Sign(a) * Sign(b) * Kernel(a, b).Value(gram(a, b));
  }
  return r + 0.5 * spec_.noise_variance;
}

Eigen::MatrixXd TwoLayerFlow::RiskGradient(const Eigen::MatrixXd& gram) const {
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(vectors(), vectors());
  for (int a = 0; a < vectors(); ++a) {
    for (int b = a + 1; b < vectors(); ++b) {
      g(a, b) = g(b, a) = 0.5 * Sign(a) * Sign(b) * Kernel(a, b).Derivative(gram(a, b));
    }
  }
  return g;
}

Eigen::MatrixXd TwoLayerFlow::GramDrift(const Eigen::MatrixXd& gram) const {
  const Eigen::MatrixXd d = 2.0 * RiskGradient(gram) * gram;  // D_ab = ∇_a R · u_b
  Eigen::MatrixXd v = Eigen::MatrixXd::Zero(vectors(), vectors());  // v_ab = du_a/dt · u_b
  for (int a = 0; a < p_; ++a) {
    for (int b = 0; b < vectors(); ++b) v(a, b) = -spec_.learning_rate * (d(a, b) - d(a, a) * gram(a, b));
  }
  Eigen::MatrixXd drift = v + v.transpose();
  drift.bottomRightCorner(k_, k_).setZero();
  return drift;
}

void TwoLayerFlow::Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const {
  dxdt = Pack(GramDrift(Unpack(x)));
}

void TwoLayerFlow::Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const {
  const Eigen::MatrixXd gram = Unpack(x);
  values->resize(1 + k_ + p_ * k_ + p_ * p_);
  int n = 0;
  (*values)[n++] = Risk(gram);
  for (int l = 0; l < k_; ++l) (*values)[n++] = gram.block(0, p_ + l, p_, 1).maxCoeff();
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_; ++l) (*values)[n++] = gram(i, p_ + l);
  }
  for (int i = 0; i < p_; ++i) {
    for (int j = 0; j < p_; ++j) (*values)[n++] = gram(i, j);
  }
}

std::string TwoLayerFlow::CheckInvariants(const Eigen::VectorXd& x) const {
  const Eigen::MatrixXd gram = Unpack(x);
  for (int i = 0; i < p_; ++i) {
    if (std::abs(gram(i, i) - 1.0) > kSphereTolerance) {
      std::ostringstream os;
      os << "student " << i << " left the unit sphere: |w|^2 = " << gram(i, i) << " (tolerance "
         << kSphereTolerance << ")";
      return os.str();
    }
  }
  const double smallest = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(gram, Eigen::EigenvaluesOnly)
                              .eigenvalues()
                              .minCoeff();
  if (smallest < -kPsdTolerance) {
    std::ostringstream os;
    os << "the Gram matrix is no longer positive semi-definite: smallest eigenvalue " << smallest
       << " < -" << kPsdTolerance;
    return os.str();
  }
  return {};
}

}  // namespace moeflow
