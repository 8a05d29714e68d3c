#include "moeflow/models/two_layer.hpp"

#include <Eigen/Eigenvalues>
#include <cmath>
#include <sstream>

#include "moeflow/error.hpp"
#include "moeflow/gauss/expectation.hpp"

namespace moeflow {
namespace {

// The model builds covariances from its own state, whose PSD-ness CheckInvariants watches.
const ExpectationOptions& StateExpectations() {
  static const ExpectationOptions options = [] {
    ExpectationOptions o;
    o.validate = false;
    return o;
  }();
  return options;
}

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
      tt_(*spec_.teacher.link, *spec_.teacher.link, kMehlerMaxOrder),
      student_derivative_(DerivativeOf(spec_.student.link)),
      identity_(MakeLink("identity")) {
  if (spec_.online_sgd_rate != 0.0 && spec_.constraint != VectorConstraint::kFree) {
    throw InputError("the online-SGD term (dynamics.online_sgd_rate) is derived for free student vectors "
                     "only; use student.vectors = free or dynamics.online_sgd_rate = 0");
  }
  observables_ = {
      {"risk", 1, 1, "population risk R = E[(f - y)^2]/2 (label noise included)"},
      {"m", k_, 1, "best student cosine with each teacher, max_i w_i·w*_l / |w_i|"},
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
    for (int b = a; b < vectors(); ++b) {
      double e = 0;
      if (UsesMehler()) {
        e = a == b ? Kernel(a, a).AtOne() : Kernel(a, b).Value(gram(a, b));
      } else {
        const Eigen::Matrix2d cov{{gram(a, a), gram(a, b)}, {gram(a, b), gram(b, b)}};
        e = Expect({LinkOf(a), LinkOf(b)}, Eigen::Vector2d::Zero(), cov, ExpectationBackend::kAuto, StateExpectations()).value;
      }
      r += (a == b ? 0.5 : 1.0) * Sign(a) * Sign(b) * e;
    }
  }
  return r + 0.5 * spec_.noise_variance;
}

Eigen::MatrixXd TwoLayerFlow::GradientOverlaps(const Eigen::MatrixXd& gram) const {
  if (UsesMehler()) return 2.0 * RiskGradient(gram) * gram;
  const int n = vectors();
  Eigen::MatrixXd d = Eigen::MatrixXd::Zero(n, n);
  Eigen::Matrix3d cov;
  for (int a = 0; a < p_; ++a) {
    for (int b = 0; b < n; ++b) {
      double sum = 0;
      for (int v = 0; v < n; ++v) {
        const int i[3] = {a, b, v};  // E[σ'(h_a) h_b σ_v(h_v)]
        for (int r = 0; r < 3; ++r) {
          for (int c = 0; c < 3; ++c) cov(r, c) = gram(i[r], i[c]);
        }
        sum += Sign(v) * Expect({student_derivative_, identity_, LinkOf(v)}, Eigen::Vector3d::Zero(), cov,
                                ExpectationBackend::kAuto, StateExpectations())
                             .value;
      }
      d(a, b) = Sign(a) * sum;
    }
  }
  return d;
}

Eigen::MatrixXd TwoLayerFlow::GradientCovariance(const Eigen::MatrixXd& gram) const {
  // E[g_a g_b] = a² Σ_{v,w} s_v s_w E[σ'(h_a) σ'(h_b) σ_v(h_v) σ_w(h_w)] + a² σ² E[σ'(h_a) σ'(h_b)].
  Eigen::MatrixXd e = Eigen::MatrixXd::Zero(p_, p_);
  Eigen::Matrix4d cov4;
  Eigen::Matrix2d cov2;
  for (int a = 0; a < p_; ++a) {
    for (int b = a; b < p_; ++b) {
      double sum = 0;
      for (int v = 0; v < vectors(); ++v) {
        for (int w = 0; w < vectors(); ++w) {
          const int i[4] = {a, b, v, w};
          for (int r = 0; r < 4; ++r) {
            for (int c = 0; c < 4; ++c) cov4(r, c) = gram(i[r], i[c]);
          }
          sum += Sign(v) * Sign(w) *
                 Expect({student_derivative_, student_derivative_, LinkOf(v), LinkOf(w)}, Eigen::Vector4d::Zero(), cov4,
                        ExpectationBackend::kAuto, StateExpectations())
                     .value;
        }
      }
      if (spec_.noise_variance > 0) {
        cov2 << gram(a, a), gram(a, b), gram(a, b), gram(b, b);
        sum += spec_.noise_variance *
               Expect({student_derivative_, student_derivative_}, Eigen::Vector2d::Zero(), cov2,
                      ExpectationBackend::kAuto, StateExpectations())
                   .value;
      }
      e(a, b) = e(b, a) = Sign(a) * Sign(b) * sum;
    }
  }
  return e;
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
  const Eigen::MatrixXd d = GradientOverlaps(gram);                 // D_ab = ∇_a R · u_b
  const double lr = spec_.learning_rate;
  Eigen::MatrixXd v = Eigen::MatrixXd::Zero(vectors(), vectors());  // v_ab = du_a/dt · u_b
  for (int a = 0; a < p_; ++a) {
    for (int b = 0; b < vectors(); ++b) {
      v(a, b) = spec_.constraint == VectorConstraint::kSpherical ? -lr * (d(a, b) - d(a, a) * gram(a, b))
                                                                  : -lr * d(a, b);
    }
  }
  Eigen::MatrixXd drift = v + v.transpose();
  drift.bottomRightCorner(k_, k_).setZero();
  if (spec_.online_sgd_rate != 0.0) {
    drift.topLeftCorner(p_, p_) += spec_.online_sgd_rate * lr * lr * GradientCovariance(gram);
  }
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
  const Eigen::VectorXd norms = gram.diagonal().head(p_).cwiseSqrt();
  for (int l = 0; l < k_; ++l) (*values)[n++] = gram.block(0, p_ + l, p_, 1).cwiseQuotient(norms).maxCoeff();
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_; ++l) (*values)[n++] = gram(i, p_ + l);
  }
  for (int i = 0; i < p_; ++i) {
    for (int j = 0; j < p_; ++j) (*values)[n++] = gram(i, j);
  }
}

std::string TwoLayerFlow::CheckInvariants(const Eigen::VectorXd& x) const {
  const Eigen::MatrixXd gram = Unpack(x);
  for (int i = 0; i < p_ && spec_.constraint == VectorConstraint::kSpherical; ++i) {
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
