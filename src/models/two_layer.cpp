#include "moeflow/models/two_layer.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "common/random.hpp"
#include "common/text.hpp"
#include "gauss/rules.hpp"
#include "models/unit_output.hpp"
#include "moeflow/error.hpp"
#include "moeflow/gauss/expectation.hpp"
#include "moeflow/gauss/gated_pair.hpp"
#include "moeflow/links/hermite.hpp"

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

// A term E[Π f_i(h_i)] of the drift: through its prepared form (FindCentredForm, found when the
// model is built) where every mean is zero and the form applies, else through Expect. `factors`
// makes the list of links only when Expect needs it.
template <int N, class Factors>
double PreparedOrExpect(const CentredForm& form, const Eigen::Matrix<double, N, 1>& mean,
                        const Eigen::Matrix<double, N, N>& cov, Factors factors) {
  double value = 0.0;
  if (form && (mean.array() == 0.0).all() && form(cov, &value)) return value;
  return Expect(factors(), mean, cov, ExpectationBackend::kAuto, StateExpectations()).value;
}

int SeriesOrder(const Link& a, const Link& b) {
  const int da = a.PolynomialDegree(), db = b.PolynomialDegree();
  if (da >= 0 && db >= 0) return std::min(da, db);
  if (da >= 0) return da;
  if (db >= 0) return db;
  return kMehlerMaxOrder;
}

// Tolerances of the invariants watched during integration (the PSD one: TwoLayerSpec::psd_tolerance).
constexpr double kSphereTolerance = 1e-7;  // |‖w_i‖² - 1| on the sphere

// L with L Lᵀ = Ω₊ for Ω ordered with its `fixed` vectors (teachers, means; positive definite) first:
// the fixed block by Cholesky, so their points do not depend on the state; the others as
// B = M C⁻ᵀ plus the symmetric square root of the Schur complement S = Q − B Bᵀ, its negative
// eigenvalues (round-off, integration error) clipped at 0. Continuous in Ω everywhere: a Cholesky
// of the whole matrix divides by pivots that vanish as students converge onto teachers or onto
// each other, and a pivot crossing its threshold made the sampled drift jump by a factor 10³.
Eigen::MatrixXd StateFactor(const Eigen::MatrixXd& omega, int fixed) {
  const int n = static_cast<int>(omega.rows()), p = n - fixed;
  Eigen::MatrixXd l = Eigen::MatrixXd::Zero(n, n);
  const Eigen::LLT<Eigen::MatrixXd> teachers(omega.topLeftCorner(fixed, fixed));
  const Eigen::MatrixXd c = teachers.matrixL();
  l.topLeftCorner(fixed, fixed) = c;
  const Eigen::MatrixXd b =
      c.triangularView<Eigen::Lower>().solve(omega.bottomLeftCorner(p, fixed).transpose()).transpose();
  l.bottomLeftCorner(p, fixed) = b;
  const Eigen::MatrixXd schur = omega.bottomRightCorner(p, p) - b * b.transpose();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(0.5 * (schur + schur.transpose()));
  const Eigen::VectorXd root = eigen.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  l.bottomRightCorner(p, p) = eigen.eigenvectors() * root.asDiagonal() * eigen.eigenvectors().transpose();
  return l;
}

std::shared_ptr<const Eigen::MatrixXd> AntitheticNormals(int count, int dimension, std::uint64_t seed) {
  const int half = (count + 1) / 2;
  auto points = std::make_shared<Eigen::MatrixXd>(2 * half, dimension);
  rng::Xoshiro256 generator(seed);
  const rng::ZigguratNormal& normal = rng::StandardNormal();
  for (int i = 0; i < half; ++i) {
    for (int j = 0; j < dimension; ++j) {
      const double z = normal(generator);
      (*points)(i, j) = z;
      (*points)(half + i, j) = -z;
    }
  }
  return points;
}

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

std::string TwoLayerFlow::TeacherGramProblem(const Eigen::MatrixXd& t) {
  if (!t.allFinite() || (t - t.transpose()).cwiseAbs().maxCoeff() > 1e-12) return "must be symmetric";
  if ((t.diagonal().array() - 1.0).abs().maxCoeff() > 1e-12) {
    return "must have a unit diagonal (teacher vectors are unit vectors)";
  }
  const double smallest = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(t, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
  if (!(smallest > 1e-9)) {
    return "must be positive definite (smallest eigenvalue " + detail::FormatNumber(smallest) +
           "): no linearly independent unit vectors have these overlaps";
  }
  return "";
}

TwoLayerFlow::TwoLayerFlow(TwoLayerSpec spec)
    : spec_(std::move(spec)),
      p_(spec_.student.Vectors()),
      k_(spec_.teacher.Vectors()),
      c_(spec_.clusters.count),
      gated_(spec_.student.HasRouters() || spec_.teacher.HasRouters()),
      point_backend_(spec_.sampled || spec_.quadrature || spec_.student.top_k > 0 || spec_.teacher.top_k > 0),
      quadrature_(spec_.quadrature),
      student_derivative_(DerivativeOf(spec_.student.link)),
      identity_(MakeLink("identity")) {
  for (const auto& [block, units] : {std::pair{"student", &spec_.student}, std::pair{"teacher", &spec_.teacher}}) {
    if (units->top_k > 0 && units->gate) {
      throw InputError("key '" + std::string(block) + ".top_k': a block is routed by its own gates (" + block +
                       ".gate) or by a top-k router, not both");
    }
    if (units->top_k > units->units) {
      ThrowBadValue(std::string(block) + ".top_k", std::to_string(units->top_k),
                    "must be <= " + std::string(block) + ".units = " + std::to_string(units->units));
    }
    if (!(units->temperature > 0)) {
      ThrowBadValue(std::string(block) + ".temperature", detail::FormatNumber(units->temperature), "must be > 0");
    }
    if (!(units->selection_temperature >= 0) || !std::isfinite(units->selection_temperature)) {
      ThrowBadValue(std::string(block) + ".selection_temperature",
                    detail::FormatNumber(units->selection_temperature), "must be >= 0 (0: hard top-k)");
    }
    if (units->neurons < 1 || (units->neurons > 1 && units->top_k == 0)) {
      ThrowBadValue(std::string(block) + ".neurons", std::to_string(units->neurons),
                    "must be 1, or >= 1 with a top-k or softmax router (" + std::string(block) +
                        ".top_k): experts that are two-layer networks are routed");
    }
    if (!units->links.empty()) {
      if (static_cast<int>(units->links.size()) != units->units) {
        ThrowBadValue(std::string(block) + ".links", std::to_string(units->links.size()) + " links",
                      "must give one link per unit (" + std::string(block) + ".units = " + std::to_string(units->units) + ")");
      }
      if (units->HasRouters()) {
        throw InputError("key '" + std::string(block) + ".links': per-unit links are for ungated blocks (no gate, "
                         "no top-k router); use " + std::string(block) + ".link");
      }
    }
  }
  const InputClusters& clusters = spec_.clusters;
  if (c_ < 0) ThrowBadValue("clusters.count", std::to_string(c_), "must be >= 0 (0: Gaussian inputs)");
  if (c_ > 0) {
    if (!std::isfinite(clusters.scale) || clusters.scale < 0) {
      ThrowBadValue("clusters.scale", detail::FormatNumber(clusters.scale), "must be a finite number >= 0");
    }
    if (clusters.teacher_weights.size() > 0 &&
        (clusters.teacher_weights.rows() != spec_.teacher.units || clusters.teacher_weights.cols() != c_)) {
      throw InputError("clusters.teacher_weights: a " + std::to_string(clusters.teacher_weights.rows()) + " x " +
                       std::to_string(clusters.teacher_weights.cols()) + " matrix for " +
                       std::to_string(spec_.teacher.units) + " teacher units and " + std::to_string(c_) + " clusters");
    }
    if (clusters.teacher_overlaps.size() > 0 &&
        (clusters.teacher_overlaps.rows() != c_ || clusters.teacher_overlaps.cols() != k_)) {
      throw InputError("clusters.teacher_overlaps: a " + std::to_string(clusters.teacher_overlaps.rows()) + " x " +
                       std::to_string(clusters.teacher_overlaps.cols()) + " matrix for " + std::to_string(c_) +
                       " clusters and " + std::to_string(k_) + " teacher vectors");
    }
    if (gated_ && !point_backend_) {
      throw InputError("cluster inputs (clusters.count > 0) with gated units need the sampled backend "
                       "(population.backend = sampled): the exact gated pair kernels take centred projections");
    }
  }
  if (spec_.online_sgd_rate != 0.0 && gated_ && !point_backend_) {
    throw InputError("the online-SGD term (dynamics.kind = online_sgd) of gated units needs the sampled backend "
                     "(population.backend = sampled); or use dynamics.kind = gradient_flow");
  }
  if (spec_.online_sgd_rate != 0.0 && spec_.constraint == VectorConstraint::kNormalised) {
    throw InputError("the online-SGD term (dynamics.kind = online_sgd) is derived for free and spherical vectors, "
                     "not normalised ones");
  }
  if (spec_.constraint == VectorConstraint::kNormalised && !gated_) {
    throw InputError("student.vectors = normalised is for gated units (soft-routed MoE); for ungated units it "
                     "is the same flow as spherical: use student.vectors = spherical");
  }
  const Eigen::MatrixXd teachers = spec_.teacher_gram.size() == 0 ? Eigen::MatrixXd::Identity(k_, k_) : spec_.teacher_gram;
  if (teachers.rows() != k_ || teachers.cols() != k_) {
    throw InputError("teacher overlaps: a " + std::to_string(teachers.rows()) + " x " +
                     std::to_string(teachers.cols()) + " matrix for " + std::to_string(k_) + " teacher vectors");
  }
  const std::string teacher_problem = TeacherGramProblem(teachers);
  if (!teacher_problem.empty()) throw InputError("teacher overlaps: the matrix " + teacher_problem);
  teacher_gram_ = Eigen::MatrixXd::Identity(k_ + c_, k_ + c_);
  teacher_gram_.topLeftCorner(k_, k_) = teachers;
  if (c_ > 0 && clusters.teacher_overlaps.size() > 0) {
    teacher_gram_.bottomLeftCorner(c_, k_) = clusters.teacher_overlaps;
    teacher_gram_.topRightCorner(k_, c_) = clusters.teacher_overlaps.transpose();
    const std::string problem = TeacherGramProblem(teacher_gram_);
    if (!problem.empty()) {
      throw InputError("clusters.teacher_overlaps: the overlaps of the teacher vectors and cluster means " + problem);
    }
  }
  const int ps = spec_.student.units, kt = spec_.teacher.units;
  if (!spec_.student_weights.empty() && static_cast<int>(spec_.student_weights.size()) != ps) {
    throw InputError("student weights: " + std::to_string(spec_.student_weights.size()) + " given for " +
                     std::to_string(ps) + " units");
  }
  for (int i = 0; i < ps; ++i) {
    const double weight = spec_.student_weights.empty() ? spec_.student.weight : spec_.student_weights[i];
    units_.push_back({weight, spec_.student.link, spec_.student.gate, i * spec_.student.neurons,
                      spec_.student.HasRouters() ? spec_.student.ExpertVectors() + i : -1});
  }
  for (int l = 0; l < kt; ++l) {
    units_.push_back({-spec_.teacher.weight, spec_.teacher.LinkOf(l), spec_.teacher.gate, p_ + l,
                      spec_.teacher.HasRouters() ? p_ + kt + l : -1});
  }
  for (const Unit& u : units_) {  // equal links (the same canonical spec) share their kernels and forms
    const auto found = std::find_if(distinct_links_.begin(), distinct_links_.end(),
                                    [&](const LinkPtr& l) { return l == u.sigma || l->Spec() == u.sigma->Spec(); });
    link_id_.push_back(static_cast<int>(found - distinct_links_.begin()));
    if (found == distinct_links_.end()) distinct_links_.push_back(u.sigma);
  }
  if (!gated_ && !point_backend_) {  // the units whose terms go through the expectation engine
    for (const LinkPtr& v : distinct_links_) {
      three_point_forms_.push_back(FindCentredForm({student_derivative_, identity_, v}));
      for (const LinkPtr& w : distinct_links_) {
        pair_forms_.push_back(FindCentredForm({v, w}));
        four_point_forms_.push_back(FindCentredForm({student_derivative_, student_derivative_, v, w}));
      }
    }
    noise_form_ = FindCentredForm({student_derivative_, student_derivative_});
    const auto add = [](std::vector<PairGroup>& groups, std::size_t form, int i, int j) {
      auto group = std::find_if(groups.begin(), groups.end(), [&](const PairGroup& g) { return g.form == form; });
      if (group == groups.end()) group = groups.insert(group, {form, {}});
      group->pairs.emplace_back(i, j);
    };
    const int units = static_cast<int>(units_.size());
    for (int v = 0; v < units; ++v) {
      for (int b = 0; b < vectors(); ++b) add(three_point_pairs_, static_cast<std::size_t>(link_id_[v]), b, v);
      for (int w = v; w < units; ++w) add(four_point_pairs_, LinkPair(v, w), v, w);
    }
  }
  if (!gated_ && !point_backend_ && c_ == 0 && spec_.constraint == VectorConstraint::kSpherical) {
    const int links = static_cast<int>(distinct_links_.size());
    for (int i = 0; i < links; ++i) {
      for (int j = 0; j < links; ++j) kernels_.emplace_back(*distinct_links_[i], *distinct_links_[j], kMehlerMaxOrder);
    }
  }
  if (quadrature_) {
    BuildQuadrature();
  } else if (point_backend_) {
    if (spec_.population_samples < 2) {
      ThrowBadValue("population.samples", std::to_string(spec_.population_samples), "must be >= 2");
    }
    points_ = AntitheticNormals(spec_.population_samples, vectors(), spec_.population_seed);
    point_weights_ = Eigen::VectorXd::Constant(points_->rows(), 1.0 / static_cast<double>(points_->rows()));
  } else if (gated_) {
    if (spec_.constraint == VectorConstraint::kFree) {
      throw InputError("gated units with free vectors need the sampled backend (population.backend = sampled); "
                       "the exact pair kernels take unit-norm directions (student.vectors = normalised or "
                       "spherical)");
    }
    for (const auto& [block, units] : {std::pair{"student", &spec_.student}, std::pair{"teacher", &spec_.teacher}}) {
      const std::string why = GatedPairKernel::Unsupported(units->gate.get(), *units->link);
      if (!why.empty()) {
        const bool gate = why.rfind("the gate", 0) == 0;
        throw InputError("key '" + std::string(block) + (gate ? ".gate" : ".link") + "': " + why +
                         " (population.backend = sampled takes any link)");
      }
    }
    gated_ss_ = std::make_shared<GatedPairKernel>(spec_.student.gate, spec_.student.link, spec_.student.gate,
                                                  spec_.student.link);
    gated_st_ = std::make_shared<GatedPairKernel>(spec_.student.gate, spec_.student.link, spec_.teacher.gate,
                                                  spec_.teacher.link);
    gated_tt_ = std::make_shared<GatedPairKernel>(spec_.teacher.gate, spec_.teacher.link, spec_.teacher.gate,
                                                  spec_.teacher.link);
  }
  observables_ = {{"risk", 1, 1, "population risk R = E[(f - y)^2]/2 (label noise included)"}};
  if (point_backend_ && !quadrature_) {
    observables_.push_back({"risk_error", 1, 1, "standard error of the sampled population risk (population.samples "
                                                "fixed points)"});
  }
  if (gated_) {
    observables_.push_back({"m", kt, 1, "best student expert cosine with each teacher expert, max_i w_i·w*_l/|w_i|"});
    observables_.push_back({"m_abs", kt, 1, "largest |cosine| of a student expert vector with each teacher expert"});
    if (spec_.student.HasRouters() && spec_.teacher.HasRouters()) {
      observables_.push_back({"m_router", kt, 1, "best student router cosine with each teacher router, max_i v_i·v*_l"});
      observables_.push_back({"recovered", kt, 1,
                              "recovery of each teacher pair: max_i min(w_i·w*_l, v_i·v*_l) (both cosines)"});
      observables_.push_back({"cross", 1, 1,
                              "max |router·expert| over all router and expert vectors (0 on the manifold where "
                              "routers are orthogonal to experts)"});
    }
  } else {
    observables_.push_back({"m", k_, 1, "best student cosine with each teacher, max_i w_i·w*_l / |w_i|"});
    observables_.push_back({"m_abs", k_, 1, "largest |cosine| of a student with each teacher, max_i |w_i·w*_l| / |w_i|"});
  }
  if (HasRouting()) {
    routing_observable_ = static_cast<int>(observables_.size());
    observables_.push_back({"routing", c_, 1, "routing accuracy of each cluster: the largest share of its inputs "
                                              "whose top-1 router logit is one expert (sampled points)"});
  }
  observables_.push_back({"units", 1, 1, "number of student units not pruned (weight != 0)"});
  observables_.push_back({"M", p_, k_ + c_,
                          std::string("student-teacher overlaps (vectors: student experts, student routers; "
                                      "teacher experts, teacher routers") +
                              (c_ > 0 ? "; then the cluster means v_c, whose overlaps times clusters.scale are the "
                                        "projections' means)"
                                      : ")"),
                          true});
  observables_.push_back({"Q", p_, p_, "student-student overlaps", true});
  if (spec_.trained_weights) {
    observables_.push_back({"a", ps, 1, "second-layer weight of each student unit (trained: student.weights_lr)"});
  }
}

int TwoLayerFlow::StateSize() const {
  return p_ * (p_ + 1) / 2 + p_ * (k_ + c_) + (spec_.trained_weights ? spec_.student.units : 0);
}

Eigen::VectorXd TwoLayerFlow::Pack(const Eigen::MatrixXd& gram) const {
  Eigen::VectorXd x(StateSize());
  int n = 0;
  for (int i = 0; i < p_; ++i) {
    for (int j = i; j < p_; ++j) x[n++] = gram(i, j);
  }
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_ + c_; ++l) x[n++] = gram(i, p_ + l);
  }
  if (spec_.trained_weights) {
    for (int i = 0; i < spec_.student.units; ++i) x[n++] = units_[i].sign;
  }
  return x;
}

std::vector<double> TwoLayerFlow::WeightsIn(const Eigen::VectorXd& x) const {
  if (!spec_.trained_weights) return StudentWeights();
  const int units = spec_.student.units;
  const Eigen::VectorXd tail = x.tail(units);
  return std::vector<double>(tail.data(), tail.data() + units);
}

bool TwoLayerFlow::HoldsWeightsOf(const Eigen::VectorXd& x) const {
  // Bit for bit (a NaN weight equals itself here: AtState's copy must not recurse).
  const int units = spec_.student.units;
  for (int i = 0; i < units; ++i) {
    const double a = x[x.size() - units + i], b = units_[i].sign;
    if (std::memcmp(&a, &b, sizeof a) != 0) return false;
  }
  return true;
}

TwoLayerFlow TwoLayerFlow::AtState(const Eigen::VectorXd& x) const {
  return spec_.trained_weights ? WithStudentWeights(WeightsIn(x)) : *this;
}

std::vector<Eigen::MatrixXd> TwoLayerFlow::OutputMoments(const Eigen::MatrixXd& gram) const {
  if (point_backend_) throw Error("OutputMoments: not for the point backends (sampled, quadrature)");
  const int units = static_cast<int>(units_.size());
  std::vector<Eigen::MatrixXd> moments(static_cast<std::size_t>(ClusterPasses()), Eigen::MatrixXd(units, units));
  if (gated_) {  // gated units take centred inputs (clusters need the sampled backend)
    GatedPairKernel::Prepared prepared;
    Eigen::MatrixXd& m = moments.front();
    for (int u = 0; u < units; ++u) {
      for (int v = u; v < units; ++v) {
        const GatedPairKernel& kernel = GatedKernel(u, v);
        kernel.Prepare(UnitCorrelations(units_[u], units_[v], gram), &prepared);
        m(u, v) = m(v, u) = kernel.Value(UnitVariant::kOutput, UnitVariant::kOutput, prepared);
      }
    }
    return moments;
  }
  // Ungated: unit a is vector a. Spherical vectors with cluster means: the Mehler series of the
  // shifted links; spherical without clusters: the Mehler kernels; otherwise the engine.
  std::vector<int> order;
  std::vector<HermiteExpansion> series;
  for (int c = 0; c < ClusterPasses(); ++c) {
    Eigen::MatrixXd& m = moments[static_cast<std::size_t>(c)];
    const Eigen::VectorXd mu = Means(gram, c);
    if (UsesMehler() && c_ > 0) series = ShiftedSeries(mu, &order);
    for (int a = 0; a < units; ++a) {
      for (int b = a; b < units; ++b) {
        double e = 0.0;
        if (UsesMehler() && c_ > 0) {
          if (a == b) {
            e = series[a].second_moment;
          } else {
            const std::vector<double>&ca = series[a].coefficients, &cb = series[b].coefficients;
            double power = 1.0;
            for (int k = 0; k <= std::min(order[a], order[b]); ++k, power *= gram(a, b)) e += ca[k] * cb[k] * power;
          }
        } else if (UsesMehler()) {
          e = a == b ? Kernel(a, a).AtOne() : Kernel(a, b).Value(gram(a, b));
        } else {
          const Eigen::Matrix2d cov{{gram(a, a), gram(a, b)}, {gram(a, b), gram(b, b)}};
          e = PreparedOrExpect(pair_forms_[LinkPair(a, b)], Eigen::Vector2d(mu[a], mu[b]), cov,
                               [&] { return std::vector<LinkPtr>{units_[a].sigma, units_[b].sigma}; });
        }
        m(a, b) = m(b, a) = e;
      }
    }
  }
  return moments;
}

std::vector<HermiteExpansion> TwoLayerFlow::ShiftedSeries(const Eigen::VectorXd& mu, std::vector<int>* order) const {
  const int units = static_cast<int>(units_.size());
  order->resize(static_cast<std::size_t>(units));
  std::vector<HermiteExpansion> series(static_cast<std::size_t>(units));
  for (int a = 0; a < units; ++a) {
    const int degree = units_[a].sigma->PolynomialDegree();
    (*order)[a] = degree >= 0 ? degree : kMehlerMaxOrder;
    series[a] = ExpandHermite(*units_[a].sigma, (*order)[a] + 1, 1.0, mu[a]);
  }
  return series;
}

Eigen::VectorXd TwoLayerFlow::Signs(int c) const {
  Eigen::VectorXd s(static_cast<Eigen::Index>(units_.size()));
  for (Eigen::Index u = 0; u < s.size(); ++u) s[u] = Sign(static_cast<int>(u), c);
  return s;
}

double TwoLayerFlow::OutputSecondMoment(const std::vector<double>& delta, const Eigen::MatrixXd& gram) const {
  const int students = spec_.student.units;
  if (static_cast<int>(delta.size()) != students) throw Error("OutputSecondMoment: one entry per unit");
  if (point_backend_) {  // the second difference of the sampled risk in the weights (the same points)
    std::vector<double> up = StudentWeights(), down = up;
    for (int i = 0; i < students; ++i) up[i] += delta[i], down[i] -= delta[i];
    return WithStudentWeights(up).Risk(gram) + WithStudentWeights(down).Risk(gram) - 2 * Risk(gram);
  }
  const Eigen::Map<const Eigen::VectorXd> d(delta.data(), students);
  double sum = 0.0;
  for (const Eigen::MatrixXd& m : OutputMoments(gram)) sum += d.dot(m.topLeftCorner(students, students) * d);
  return sum / ClusterPasses();
}

Eigen::VectorXd TwoLayerFlow::WeightGradient(const Eigen::MatrixXd& gram) const {
  if (point_backend_) return SampleTerms(gram, false, false, true).weight_gradient;  // E[(f − y) ∂f/∂a_i], one pass
  // R = (1/C) Σ_c ½ sᵀ M_c s with s the units' signed weights: ∂R/∂a_i = (1/C) Σ_c (M_c s)_i.
  const int students = spec_.student.units;
  const std::vector<Eigen::MatrixXd> moments = OutputMoments(gram);
  Eigen::VectorXd g = Eigen::VectorXd::Zero(students);
  for (int c = 0; c < ClusterPasses(); ++c) g += moments[static_cast<std::size_t>(c)].topRows(students) * Signs(c);
  g /= ClusterPasses();
  for (int i = 0; i < students; ++i) {
    if (units_[i].sign == 0.0) g[i] = 0.0;  // pruned
  }
  return g;
}

Eigen::MatrixXd TwoLayerFlow::Unpack(const Eigen::VectorXd& x) const {
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(vectors(), vectors());
  gram.bottomRightCorner(k_ + c_, k_ + c_) = teacher_gram_;
  int n = 0;
  for (int i = 0; i < p_; ++i) {
    for (int j = i; j < p_; ++j) gram(i, j) = gram(j, i) = x[n++];
  }
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_ + c_; ++l) gram(i, p_ + l) = gram(p_ + l, i) = x[n++];
  }
  return gram;
}

std::size_t TwoLayerFlow::LinkPair(int u, int v) const {
  return static_cast<std::size_t>(link_id_[u] * static_cast<int>(distinct_links_.size()) + link_id_[v]);
}

const MehlerKernel& TwoLayerFlow::Kernel(int a, int b) const { return kernels_[LinkPair(a, b)]; }

double TwoLayerFlow::Sign(int u, int c) const {
  const int students = spec_.student.units;
  if (u < students || c_ == 0 || spec_.clusters.teacher_weights.size() == 0) return units_[u].sign;
  return -spec_.clusters.teacher_weights(u - students, c);
}

Eigen::VectorXd TwoLayerFlow::Means(const Eigen::MatrixXd& gram, int c) const {
  if (c_ == 0) return Eigen::VectorXd::Zero(vectors());
  return spec_.clusters.scale * gram.col(p_ + k_ + c);
}

// Per cluster, every unit's link shifted by its mean μ_a = ρ Ω(a, v_c) (Appell for polynomial
// links, quadrature otherwise: ExpandHermite), and with s_a the signs in f − y of cluster c,
//   R_c = ½σ² + ½ Σ_a s_a² E[σ_a²] + Σ_{a<b} s_a s_b Σ_k c_k^a c_k^b Ω_ab^k,
//   ∂R_c/∂Ω_ab = s_a s_b Σ_k k c_k^a c_k^b Ω_ab^(k−1),
//   ∂R_c/∂μ_a = Σ_{b≠a} s_a s_b Σ_k √(k+1) c_(k+1)^a c_k^b Ω_ab^k + s_a² E[σ_a σ_a']
// (σ_a' has coefficients √(k+1) c_(k+1)^a); R = mean over c, and ∂R/∂Ω(a, v_c) = (ρ/C) ∂R_c/∂μ_a.
Eigen::MatrixXd TwoLayerFlow::ClusterMehlerGradient(const Eigen::MatrixXd& gram) const {
  const int units = static_cast<int>(units_.size()), n = vectors();
  const double weight = 1.0 / c_;
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(n, n);
  std::vector<int> order;
  std::vector<double> sign(static_cast<std::size_t>(units)), mean_derivative(static_cast<std::size_t>(units));
  for (int c = 0; c < c_; ++c) {
    const std::vector<HermiteExpansion> series = ShiftedSeries(Means(gram, c), &order);
    for (int a = 0; a < units; ++a) sign[a] = Sign(a, c);
    // ∂R_c/∂μ_a = s_a Σ_b s_b E[σ_a'(h_a) σ_b(h_b)] (b = a included: E[σ_a σ_a']); ∂R_c/∂ρ_ab from
    // the derivative of the Mehler series.
    for (int a = 0; a < units; ++a) {
      const std::vector<double>& ca = series[a].coefficients;
      double own = 0.0;
      for (int k = 0; k < order[a]; ++k) own += std::sqrt(k + 1.0) * ca[k + 1] * ca[k];
      mean_derivative[a] = sign[a] * sign[a] * own;
    }
    for (int a = 0; a < units; ++a) {
      const std::vector<double>& ca = series[a].coefficients;
      for (int b = a + 1; b < units; ++b) {
        const std::vector<double>& cb = series[b].coefficients;
        const double s = sign[a] * sign[b], rho = gram(a, b);
        const int kmax = std::min(order[a], order[b]);
        double slope = 0.0, shift_a = 0.0, shift_b = 0.0, power = 1.0;
        for (int k = 0; k <= kmax; ++k) {
          shift_a += std::sqrt(k + 1.0) * ca[k + 1] * cb[k] * power;
          shift_b += std::sqrt(k + 1.0) * cb[k + 1] * ca[k] * power;
          if (k + 1 <= kmax) slope += (k + 1.0) * ca[k + 1] * cb[k + 1] * power;
          power *= rho;
        }
        mean_derivative[a] += s * shift_a;
        mean_derivative[b] += s * shift_b;
        g(a, b) += weight * 0.5 * s * slope;
        g(b, a) = g(a, b);
      }
    }
    const int v = p_ + k_ + c;
    for (int a = 0; a < units; ++a) {
      g(a, v) += 0.5 * weight * spec_.clusters.scale * mean_derivative[a];
      g(v, a) = g(a, v);
    }
  }
  return g;
}

std::string TwoLayerFlow::QuadratureProblem(const TwoLayerSpec& spec) {
  // What the rule needs: polynomial links (the integrand is then a polynomial given the logits) and
  // routers whose weights are smooth functions of the logit differences (a softmax over all experts).
  for (const auto& [block, units] : {std::pair{"student", &spec.student}, std::pair{"teacher", &spec.teacher}}) {
    const std::string name(block);
    if (units->gate) {
      return "population.backend = quadrature: key '" + name + ".gate': units with their own gates have "
             "the exact backend (population.backend = auto); the quadrature backend takes softmax "
             "routers (top_k = units) or no routers";
    }
    if (units->top_k > 0 && (units->top_k < units->units || units->selection_temperature > 0)) {
      return "key '" + name + ".top_k': value '" + std::to_string(units->top_k) + "' must equal " + name +
             ".units = " + std::to_string(units->units) +
             " with population.backend = quadrature (a top-k selection is not smooth in the logits: "
             "use population.backend = sampled)";
    }
    for (int u = 0; u < units->units; ++u) {
      if (units->LinkOf(u)->PolynomialDegree() < 0) {
        return "population.backend = quadrature: key '" + name + ".link" + (units->links.empty() ? "" : "s") +
               "': link '" + units->LinkOf(u)->Spec() +
               "' is not a polynomial (the rule is exact for polynomial links: h(k), hermite(...), "
               "he(k), poly(...)); use population.backend = sampled";
      }
    }
  }
  return {};
}

void TwoLayerFlow::BuildQuadrature() {
  if (const std::string problem = QuadratureProblem(spec_); !problem.empty()) throw InputError(problem);
  int degree = 0;
  for (const UnitBlock* units : {&spec_.student, &spec_.teacher}) {
    for (int u = 0; u < units->units; ++u) degree = std::max(degree, units->LinkOf(u)->PolynomialDegree());
    const int first = units == &spec_.student ? 0 : p_;
    for (int v = 0; v < units->ExpertVectors(); ++v) active_rows_.push_back(first + v);
    if (units->top_k > 0 && units->softmax) {
      for (int e = 1; e < units->units; ++e) {
        gate_rows_.emplace_back(first + units->ExpertVectors() + e, first + units->ExpertVectors());
      }
    }
  }
  // The gate rule's error falls like exp(−2πa/h) with a = πτ/‖θ_i − θ_j‖ ≥ πτ/2 (unit routers), the
  // distance of the logistic's poles from the real axis of the logit-difference coordinate. Automatic
  // (0): the spacing h = 0.43τ, exp(−π²/0.43) ≈ 1e-10 at the worst case ‖θ_i − θ_j‖ = 2 (measured at
  // τ = 0.3: 129 nodes, h = 0.47τ, 2e-10 relative in D; tests/quadrature_backend_test.cpp).
  if (spec_.gate_nodes == 0) {
    double tau = std::numeric_limits<double>::infinity();
    for (const UnitBlock* units : {&spec_.student, &spec_.teacher}) {
      if (units->top_k > 0 && units->softmax) tau = std::min(tau, units->temperature);
    }
    spec_.gate_nodes = std::isfinite(tau) ? std::max(17, static_cast<int>(std::ceil(18.0 / (0.43 * tau))) + 1) : 17;
  }
  if (spec_.gate_nodes < 3) ThrowBadValue("population.gate_nodes", std::to_string(spec_.gate_nodes), "must be >= 3");
  // Given the logits, (f − y) ∂f/∂h_a h_b has degree ≤ 2D + 1 (D the largest link degree) and the
  // online term's g_a g_b ≤ 4D: a sparse grid of level k is exact to degree 2k + 1.
  const int level = spec_.online_sgd_rate != 0.0 ? 2 * degree : degree;
  const int gates = static_cast<int>(gate_rows_.size()), active = static_cast<int>(active_rows_.size());
  const detail::CubatureRule sparse = detail::SparseGaussHermite(active, level);
  const detail::QuadratureRule& line = detail::GaussianTrapezoid(spec_.gate_nodes);
  const double count = std::pow(static_cast<double>(spec_.gate_nodes), gates) * sparse.size();
  if (count > 2e7) {
    ThrowBadValue("population.gate_nodes", std::to_string(spec_.gate_nodes),
                  "gives " + detail::FormatNumber(count) + " quadrature nodes (" + std::to_string(gates) +
                      " router directions, a sparse grid of " + std::to_string(sparse.size()) +
                      " nodes); at most 2e7: use fewer nodes or population.backend = sampled");
  }
  auto nodes = std::make_shared<Eigen::MatrixXd>(static_cast<Eigen::Index>(count), gates + active);
  point_weights_.resize(nodes->rows());
  std::vector<int> at(static_cast<std::size_t>(gates), 0);
  Eigen::Index row = 0;
  while (true) {
    double gate_weight = 1.0;
    for (int j = 0; j < gates; ++j) gate_weight *= line.w[at[j]];
    for (int i = 0; i < sparse.size(); ++i, ++row) {
      for (int j = 0; j < gates; ++j) (*nodes)(row, j) = line.x[at[j]];
      for (int j = 0; j < active; ++j) (*nodes)(row, gates + j) = sparse.x[static_cast<std::size_t>(i * active + j)];
      point_weights_[row] = gate_weight * sparse.w[i];
    }
    int j = 0;
    while (j < gates && ++at[j] == spec_.gate_nodes) at[j++] = 0;
    if (j == gates) break;
  }
  nodes_ = std::move(nodes);
}

void TwoLayerFlow::PopulationPoints(const Eigen::MatrixXd& gram, Eigen::MatrixXd* h, const Eigen::VectorXd** w) const {
  const Eigen::MatrixXd l = PointFactor(gram);
  *w = &point_weights_;
  if (!quadrature_) {
    h->noalias() = (*points_) * l.transpose();
    return;
  }
  // An orthonormal basis q of the whitened coordinates whose first columns span the gate rows and
  // then the active rows (Householder QR: the first j columns of Q span the first j columns of A,
  // whatever the rank). The integrand depends on z only through these rows, so the nodes placed in
  // this basis integrate it as in the coordinates of the rule; the rest of z is independent of it
  // and integrates to its mean.
  const int n = vectors(), gates = static_cast<int>(gate_rows_.size());
  Eigen::MatrixXd a(n, nodes_->cols());
  for (int j = 0; j < gates; ++j) a.col(j) = (l.row(gate_rows_[j].first) - l.row(gate_rows_[j].second)).transpose();
  for (std::size_t j = 0; j < active_rows_.size(); ++j) a.col(gates + static_cast<int>(j)) = l.row(active_rows_[j]).transpose();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(n, a.cols());
  h->noalias() = (*nodes_) * (l * q).transpose();
}

Eigen::MatrixXd TwoLayerFlow::PointFactor(const Eigen::MatrixXd& gram) const {
  // Teachers first: their projections are the same points whatever the state, so at the teacher
  // itself f − y vanishes at every point and the sampled risk is exactly zero.
  const int n = vectors();
  std::vector<int> order;
  for (int a = p_; a < n; ++a) order.push_back(a);
  for (int a = 0; a < p_; ++a) order.push_back(a);
  Eigen::MatrixXd permuted(n, n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) permuted(i, j) = gram(order[i], order[j]);
  }
  const Eigen::MatrixXd l = StateFactor(permuted, k_ + c_);
  Eigen::MatrixXd factor(n, n);  // row a: the coordinates of vector a
  for (int i = 0; i < n; ++i) factor.row(order[i]) = l.row(i);
  return factor;
}

std::vector<double> TwoLayerFlow::TeacherWeights(int c) const {
  const int kt = spec_.teacher.units;
  std::vector<double> w(static_cast<std::size_t>(kt));
  for (int l = 0; l < kt; ++l) w[static_cast<std::size_t>(l)] = -Sign(spec_.student.units + l, c);
  return w;
}

Eigen::VectorXd TwoLayerFlow::RoutingAccuracy(const Eigen::MatrixXd& gram) const {
  const int units = spec_.student.units, first = spec_.student.ExpertVectors();
  Eigen::VectorXd accuracy(c_);
  if (units == 2) {
    // Exactly, whatever the backend: the logit difference is N(μ_1 − μ_2, Ω_11 + Ω_22 − 2Ω_12) in
    // cluster c, and expert 1 is on top where it is positive.
    const double spread = std::sqrt(std::max(0.0, gram(first, first) + gram(first + 1, first + 1) - 2 * gram(first, first + 1)));
    for (int c = 0; c < c_; ++c) {
      const Eigen::VectorXd mu = Means(gram, c);
      const double gap = std::abs(mu[first] - mu[first + 1]);
      accuracy[c] = spread > 0 ? 0.5 * std::erfc(-gap / (spread * std::sqrt(2.0))) : 1.0;
    }
    return accuracy;
  }
  // M > 2: the points mapped as in SampleTerms, then shifted by each cluster's means; the router
  // logits are the columns ExpertVectors()..+units. With the quadrature backend's nodes the share
  // integrates a step function: first-order accurate in the gate rule's spacing.
  Eigen::MatrixXd h;
  const Eigen::VectorXd* w = nullptr;
  PopulationPoints(gram, &h, &w);
  std::vector<double> shares(static_cast<std::size_t>(units));
  for (int c = 0; c < c_; ++c) {
    const Eigen::VectorXd mu = Means(gram, c);
    std::fill(shares.begin(), shares.end(), 0.0);
    for (Eigen::Index b = 0; b < h.rows(); ++b) {
      int top = 0;
      for (int i = 1; i < units; ++i) {
        if (h(b, first + i) + mu[first + i] > h(b, first + top) + mu[first + top]) top = i;
      }
      shares[static_cast<std::size_t>(top)] += (*w)[b];
    }
    accuracy[c] = *std::max_element(shares.begin(), shares.end());
  }
  return accuracy;
}

TwoLayerFlow::SampledTerms TwoLayerFlow::SampleTerms(const Eigen::MatrixXd& gram, bool gradient, bool covariance,
                                                     bool weights) const {
  const int n = vectors();
  // Per-thread workspaces: a drift evaluation would otherwise allocate (and the system return)
  // several N × n matrices.
  thread_local Eigen::MatrixXd hp, wg, g, df;
  thread_local Eigen::VectorXd squared;
  const Eigen::VectorXd* w = nullptr;
  PopulationPoints(gram, &hp, &w);
  const int count = static_cast<int>(hp.rows()), half = count / 2;

  const BlockOutput student(spec_.student, 0, spec_.student.HasRouters() ? spec_.student.ExpertVectors() : -1);
  const BlockOutput teacher(spec_.teacher, p_, spec_.teacher.HasRouters() ? p_ + spec_.teacher.ExpertVectors() : -1);
  const std::vector<double> student_weights = StudentWeights();
  BlockOutput::Scratch scratch;
  std::vector<double> grad(static_cast<std::size_t>(n), 0.0), shifted(static_cast<std::size_t>(n));
  const int units = spec_.student.units;
  std::vector<double> phi(weights ? static_cast<std::size_t>(units) : 0);
  Eigen::VectorXd weight_gradient = Eigen::VectorXd::Zero(weights ? units : 0);  // Σ (f − y) ∂f/∂a
  const int passes = ClusterPasses();
  squared.setZero(count);
  // D = E[g hᵀ] over the clusters, h = ĥ + μ_c with ĥ the points (the same in every cluster):
  //   D = Σ_b ĝ_b ĥ_bᵀ + Σ_c ḡ_c μ_cᵀ,   ĝ_b = Σ_c w_b g_(b,c) / C,   ḡ_c = Σ_b w_b g_(b,c) / C,
  // so one product with the points serves every cluster.
  if (gradient) wg.setZero(count, p_);
  Eigen::MatrixXd cluster_sums = Eigen::MatrixXd::Zero(p_, gradient ? passes : 0);  // column c: ḡ_c
  g.resize(covariance ? count * passes : 0, p_);
  df.resize(covariance ? count * passes : 0, p_);
  for (int c = 0; c < passes; ++c) {
    // Cluster c: every point shifted by the means (the same points for every cluster).
    const Eigen::VectorXd mu = Means(gram, c);
    const std::vector<double> teacher_weights = TeacherWeights(c);
    for (int b = 0; b < count; ++b) {
      const double* row = nullptr;
      if (c_ > 0) {
        for (int a = 0; a < n; ++a) shifted[a] = hp(b, a) + mu[a];
      } else {
        for (int a = 0; a < n; ++a) shifted[a] = hp(b, a);
      }
      row = shifted.data();
      const double y = teacher.Evaluate(row, teacher_weights.data(), nullptr, &scratch);
      const double f = student.Evaluate(row, student_weights.data(), gradient || covariance ? grad.data() : nullptr,
                                        &scratch, weights ? phi.data() : nullptr);
      const double r = f - y;
      squared[b] += r * r / passes;
      if (weights) {
        for (int i = 0; i < units; ++i) weight_gradient[i] += (*w)[b] * r * phi[i];
      }
      if (gradient) {
        const double scale = (*w)[b] * r / passes;
        for (int a = 0; a < p_; ++a) {
          const double v = scale * grad[a];
          wg(b, a) += v;
          cluster_sums(a, c) += v;
        }
      }
      if (covariance) {
        for (int a = 0; a < p_; ++a) {
          g(c * count + b, a) = r * grad[a];
          df(c * count + b, a) = grad[a];
        }
      }
    }
  }
  SampledTerms terms;
  terms.risk = 0.5 * w->dot(squared) + 0.5 * spec_.noise_variance;
  if (!quadrature_) {
    // Antithetic pairs are the independent draws: the error from the spread of the pair means.
    const Eigen::VectorXd pairs = 0.5 * (squared.head(half) + squared.segment(half, half));
    const double spread = (pairs.array() - pairs.mean()).square().sum() / std::max(1, half - 1);
    terms.risk_error = 0.5 * std::sqrt(spread / half);
  }
  if (weights) terms.weight_gradient = weight_gradient / static_cast<double>(passes);
  if (gradient) {
    // D = E[g hᵀ] = E[g zᵀ] Lᵀ, and E[g zᵀ] = A L by Stein's lemma (A_ac = E[∂g_a/∂h_c]): along a
    // direction of Ω with eigenvalue λ the exact D is O(λ), but the sampled one carries noise
    // O(√(λ/N)), which would drive λ through zero in finite time once λ ~ 1/N (vectors passing
    // through each other's span) and push Ω out of the PSD cone. The estimate is therefore shrunk
    // on the directions the points cannot resolve: D̃ = D̂ (Ω + εI)⁻¹ Ω with ε = 1/N, which keeps
    // λ' = O(λ) and changes D by O(ε) elsewhere.
    Eigen::MatrixXd d = wg.transpose() * hp;
    for (int c = 0; c < passes && c_ > 0; ++c) d += cluster_sums.col(c) * Means(gram, c).transpose();
    if (quadrature_) {
      // Exact but for the gate rule's error, a relative one: D v = 0 exactly for Ω v = 0 (h = L Q ζ).
      terms.gradient_overlaps = std::move(d);
    } else {
      // On the eigenvectors of Ω: the factor λ/(λ + ε), with λ clipped at 0 — a state slightly
      // outside the PSD cone (within integrate.psd_tolerance) would otherwise make Ω + εI singular.
      const double epsilon = 1.0 / static_cast<double>(count);
      const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(gram);
      const Eigen::ArrayXd lambda = eigen.eigenvalues().array().max(0.0);
      const Eigen::VectorXd shrink = lambda / (lambda + epsilon);
      terms.gradient_overlaps = d * eigen.eigenvectors() * shrink.asDiagonal() * eigen.eigenvectors().transpose();
    }
  }
  if (covariance) {
    // The weight of every row of g (the points repeated for every cluster pass, divided by the passes).
    Eigen::VectorXd row_weights(count * passes);
    for (int c = 0; c < passes; ++c) row_weights.segment(c * count, count) = *w / passes;
    terms.gradient_covariance = g.transpose() * row_weights.asDiagonal() * g +
                                spec_.noise_variance * df.transpose() * row_weights.asDiagonal() * df;
  }
  return terms;
}

double TwoLayerFlow::Risk(const Eigen::MatrixXd& gram) const {
  if (point_backend_) return SampleTerms(gram, false, false).risk;
  // R = (1/C) Σ_c ½ Σ_{u,v} s_u s_v E_c[φ_u φ_v] + σ²/2, s the signed weights in cluster c.
  const std::vector<Eigen::MatrixXd> moments = OutputMoments(gram);
  double r = 0.0;
  for (int c = 0; c < ClusterPasses(); ++c) {
    const Eigen::VectorXd s = Signs(c);
    r += 0.5 * s.dot(moments[static_cast<std::size_t>(c)] * s);
  }
  return r / ClusterPasses() + 0.5 * spec_.noise_variance;
}

const GatedPairKernel& TwoLayerFlow::GatedKernel(int u, int v) const {
  const int students = spec_.student.units;
  return u < students && v < students ? *gated_ss_ : (u < students || v < students ? *gated_st_ : *gated_tt_);
}

GatedPairKernel::Correlations TwoLayerFlow::UnitCorrelations(const Unit& u, const Unit& v, const Eigen::MatrixXd& g) {
  auto at = [&g](int a, int b) { return a < 0 || b < 0 ? 0.0 : g(a, b); };
  return {at(u.router, u.expert), at(u.router, v.router), at(u.router, v.expert),
          at(u.expert, v.router), g(u.expert, v.expert),  at(v.router, v.expert)};
}

// Stein's lemma on D_ab = E[F ∂_a F h_b] (F = f − y as a function of the projections):
//   D_ab = Σ_c A_ac Ω_cb,   A_ac = E[∂_a F ∂_c F] + E[F ∂_a∂_c F],
// where ∂_a∂_c F vanishes unless a and c belong to the same unit. Every term is a pair
// expectation of unit variants (GatedPairKernel).
Eigen::MatrixXd TwoLayerFlow::GatedGradientOverlaps(const Eigen::MatrixXd& gram) const {
  using V = UnitVariant;
  const int n = vectors();
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(n, n);
  GatedPairKernel::Prepared prepared;
  for (int iu = 0; iu < spec_.student.units; ++iu) {
    const Unit& u = units_[iu];
    const int e = u.expert, r = u.router;
    for (int iv = 0; iv < static_cast<int>(units_.size()); ++iv) {
      const Unit& v = units_[iv];
      const GatedPairKernel& kernel = GatedKernel(iu, iv);
      kernel.Prepare(UnitCorrelations(u, v, gram), &prepared);
      const double s = u.sign * v.sign;
      a(e, v.expert) += s * kernel.Value(V::kExpert, V::kExpert, prepared);
      if (v.router >= 0) a(e, v.router) += s * kernel.Value(V::kExpert, V::kRouter, prepared);
      if (r >= 0) {
        a(r, v.expert) += s * kernel.Value(V::kRouter, V::kExpert, prepared);
        if (v.router >= 0) a(r, v.router) += s * kernel.Value(V::kRouter, V::kRouter, prepared);
      }
      a(e, e) += s * kernel.Value(V::kExpertExpert, V::kOutput, prepared);
      if (r >= 0) {
        const double mixed = s * kernel.Value(V::kRouterExpert, V::kOutput, prepared);
        a(e, r) += mixed;
        a(r, e) += mixed;
        a(r, r) += s * kernel.Value(V::kRouterRouter, V::kOutput, prepared);
      }
    }
  }
  return a * gram;  // teacher rows of a are zero
}

TwoLayerFlow TwoLayerFlow::WithLearningRates(double expert_lr, double router_lr, double weight_lr) const {
  TwoLayerFlow copy = *this;
  copy.spec_.learning_rate = expert_lr;
  copy.spec_.router_learning_rate = router_lr;
  copy.spec_.weight_learning_rate = weight_lr;
  return copy;
}

TwoLayerFlow TwoLayerFlow::WithStudentWeights(const std::vector<double>& weights) const {
  if (static_cast<int>(weights.size()) != spec_.student.units) throw Error("WithStudentWeights: one weight per unit");
  TwoLayerFlow copy = *this;
  copy.spec_.student_weights = weights;
  for (int i = 0; i < spec_.student.units; ++i) copy.units_[i].sign = weights[i];
  return copy;
}

std::vector<double> TwoLayerFlow::StudentWeights() const {
  std::vector<double> w;
  for (int i = 0; i < spec_.student.units; ++i) w.push_back(units_[i].sign);
  return w;
}

double TwoLayerFlow::StudentMultiplier(int a) const {
  const bool router = spec_.student.HasRouters() && a >= spec_.student.ExpertVectors();
  return router ? spec_.router_learning_rate : spec_.learning_rate;
}

double TwoLayerFlow::Multiplier(int a) const {
  const double lr = StudentMultiplier(a);
  if (spec_.constraint != VectorConstraint::kNormalised) return lr;
  const bool router = spec_.student.HasRouters() && a >= spec_.student.ExpertVectors();
  const double norm = router ? spec_.router_norm : spec_.expert_norm;
  return lr / (norm * norm);
}

Eigen::MatrixXd TwoLayerFlow::GradientOverlaps(const Eigen::MatrixXd& gram) const {
  if (point_backend_) {
    Eigen::MatrixXd d = Eigen::MatrixXd::Zero(vectors(), vectors());
    d.topRows(p_) = SampleTerms(gram, true, false).gradient_overlaps;
    return d;
  }
  if (gated_) return GatedGradientOverlaps(gram);
  if (UsesMehler()) return 2.0 * RiskGradient(gram) * gram;
  // D_ab = E[g_a h_b] with h ~ N(μ_c, Ω) (the mean included in h_b), averaged over clusters.
  const int n = vectors();
  Eigen::MatrixXd d = Eigen::MatrixXd::Zero(n, n);
  Eigen::Matrix3d cov;
  std::vector<double> values;
  for (const PairGroup& group : three_point_pairs_) values.resize(std::max(values.size(), group.pairs.size()));
  Eigen::VectorXd sum(n);
  for (int c = 0; c < ClusterPasses(); ++c) {
    const Eigen::VectorXd mu = Means(gram, c);
    const bool centred = (mu.array() == 0.0).all();
    for (int a = 0; a < p_; ++a) {
      sum.setZero();
      for (const PairGroup& group : three_point_pairs_) {  // (b, v) by the unit's link
        const CentredForm& form = three_point_forms_[group.form];
        const bool all_at_once = centred && form.AtPairs(gram, std::span<const int>(&a, 1), group.pairs, values.data());
        for (std::size_t k = 0; k < group.pairs.size(); ++k) {
          const auto [b, v] = group.pairs[k];
          double term = values[k];
          if (!all_at_once) {
            const int i[3] = {a, b, v};  // E[σ'(h_a) h_b σ_v(h_v)]
            for (int r = 0; r < 3; ++r) {
              for (int q = 0; q < 3; ++q) cov(r, q) = gram(i[r], i[q]);
            }
            term = PreparedOrExpect(form, Eigen::Vector3d(mu[a], mu[b], mu[v]), cov, [&] {
              return std::vector<LinkPtr>{student_derivative_, identity_, units_[v].sigma};
            });
          }
          sum[b] += Sign(v, c) * term;
        }
      }
      d.row(a) += units_[a].sign * sum.transpose() / ClusterPasses();
    }
  }
  return d;
}

Eigen::MatrixXd TwoLayerFlow::GradientCovariance(const Eigen::MatrixXd& gram) const {
  if (point_backend_) return SampleTerms(gram, false, true).gradient_covariance;
  // E[g_a g_b] = a² Σ_{v,w} s_v s_w E[σ'(h_a) σ'(h_b) σ_v(h_v) σ_w(h_w)] + a² σ² E[σ'(h_a) σ'(h_b)].
  Eigen::MatrixXd e = Eigen::MatrixXd::Zero(p_, p_);
  Eigen::Matrix4d cov4;
  Eigen::Matrix2d cov2;
  std::vector<double> values;
  for (const PairGroup& group : four_point_pairs_) values.resize(std::max(values.size(), group.pairs.size()));
  for (int c = 0; c < ClusterPasses(); ++c) {
    const Eigen::VectorXd mu = Means(gram, c);
    const bool centred = (mu.array() == 0.0).all();
    for (int a = 0; a < p_; ++a) {
      for (int b = a; b < p_; ++b) {
        double sum = 0;
        const int fixed[2] = {a, b};
        for (const PairGroup& group : four_point_pairs_) {  // the pairs v ≤ w of units by their links' form
          const CentredForm& form = four_point_forms_[group.form];
          const bool all_at_once = centred && form.AtPairs(gram, fixed, group.pairs, values.data());
          for (std::size_t k = 0; k < group.pairs.size(); ++k) {
            const auto [v, w] = group.pairs[k];
            double term = values[k];
            if (!all_at_once) {
              const int i[4] = {a, b, v, w};
              for (int r = 0; r < 4; ++r) {
                for (int q = 0; q < 4; ++q) cov4(r, q) = gram(i[r], i[q]);
              }
              term = PreparedOrExpect(form, Eigen::Vector4d(mu[a], mu[b], mu[v], mu[w]), cov4, [&] {
                return std::vector<LinkPtr>{student_derivative_, student_derivative_, units_[v].sigma, units_[w].sigma};
              });
            }
            sum += (w == v ? 1.0 : 2.0) * Sign(v, c) * Sign(w, c) * term;  // the (v, w) and (w, v) terms are equal
          }
        }
        if (spec_.noise_variance > 0) {
          cov2 << gram(a, a), gram(a, b), gram(a, b), gram(b, b);
          sum += spec_.noise_variance *
                 PreparedOrExpect(noise_form_, Eigen::Vector2d(mu[a], mu[b]), cov2,
                                  [&] { return std::vector<LinkPtr>{student_derivative_, student_derivative_}; });
        }
        e(a, b) += units_[a].sign * units_[b].sign * sum / ClusterPasses();
        e(b, a) = e(a, b);
      }
    }
  }
  return e;
}

Eigen::MatrixXd TwoLayerFlow::RiskGradient(const Eigen::MatrixXd& gram) const {
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(vectors(), vectors());
  if (c_ > 0) return ClusterMehlerGradient(gram);
  for (int a = 0; a < vectors(); ++a) {
    for (int b = a + 1; b < vectors(); ++b) {
      g(a, b) = g(b, a) = 0.5 * units_[a].sign * units_[b].sign * Kernel(a, b).Derivative(gram(a, b));
    }
  }
  return g;
}

Eigen::MatrixXd TwoLayerFlow::GramDrift(const Eigen::MatrixXd& gram) const { return GramDrift(gram, nullptr); }

Eigen::MatrixXd TwoLayerFlow::GramDrift(const Eigen::MatrixXd& gram, Eigen::VectorXd* weight_gradient) const {
  const bool online = spec_.online_sgd_rate != 0.0;
  Eigen::MatrixXd d, e;  // D_ab = ∇_a R · u_b;  E[g_a g_b] (online-SGD limit)
  if (point_backend_) {          // one pass over the points for all
    SampledTerms terms = SampleTerms(gram, true, online, weight_gradient != nullptr);
    d = Eigen::MatrixXd::Zero(vectors(), vectors());
    d.topRows(p_) = terms.gradient_overlaps;
    e = std::move(terms.gradient_covariance);
    if (weight_gradient != nullptr) *weight_gradient = std::move(terms.weight_gradient);
  } else {
    if (weight_gradient != nullptr) *weight_gradient = WeightGradient(gram);
    d = GradientOverlaps(gram);
    if (online) e = GradientCovariance(gram);
  }
  Eigen::MatrixXd v = Eigen::MatrixXd::Zero(vectors(), vectors());  // v_ab = du_a/dt · u_b
  for (int a = 0; a < p_; ++a) {
    const double lr = Multiplier(a);
    for (int b = 0; b < vectors(); ++b) {
      v(a, b) = spec_.constraint == VectorConstraint::kFree ? -lr * d(a, b) : -lr * (d(a, b) - d(a, a) * gram(a, b));
    }
  }
  Eigen::MatrixXd drift = v + v.transpose();
  drift.bottomRightCorner(k_ + c_, k_ + c_).setZero();
  if (spec_.constraint != VectorConstraint::kFree) {
    // Unit norms are exact, not integrated: 2 v_aa = 2Λ D_aa (Ω_aa − 1) would amplify round-off
    // in Ω_aa at rate 2Λ|D_aa| wherever D_aa < 0.
    for (int a = 0; a < p_; ++a) drift(a, a) = 0.0;
  }
  if (online) {
    // The SGD step of vector a is Λ_a η g_a: the noise term is Λ_a Λ_b E[g_a g_b] (a frozen block,
    // Λ = 0, has none).
    Eigen::VectorXd lambda(p_);
    for (int a = 0; a < p_; ++a) lambda[a] = StudentMultiplier(a);
    e = lambda.asDiagonal() * e * lambda.asDiagonal();
    const double rate = spec_.online_sgd_rate;
    if (spec_.constraint == VectorConstraint::kFree) {
      drift.topLeftCorner(p_, p_) += rate * e;
    } else {
      // Spherical SGD renormalises after each step: ‖w − ηg̃‖² = 1 + η²g²‖x − hw‖² ≈ 1 + η²g²d, so
      // per unit time (η = η̃/d) every overlap of w_i shrinks by (η̃/2)E[g_i²] besides the η̃E[g_i g_j]
      // of the free case (the diagonal stays 1).
      for (int i = 0; i < p_; ++i) {
        for (int b = 0; b < vectors(); ++b) {
          if (b == i) continue;
          const double shrink = b < p_ ? 0.5 * (e(i, i) + e(b, b)) : 0.5 * e(i, i);
          const double add = b < p_ ? e(i, b) : 0.0;
          drift(i, b) += rate * (add - shrink * gram(i, b));
          if (b >= p_) drift(b, i) = drift(i, b);
        }
      }
    }
  }
  return drift;
}

void TwoLayerFlow::Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const {
  if (spec_.trained_weights && !HoldsWeightsOf(x)) return AtState(x).Drift(x, dxdt);
  const Eigen::MatrixXd gram = Unpack(x);
  const bool weights = spec_.trained_weights && spec_.weight_learning_rate != 0.0;
  Eigen::VectorXd weight_gradient;
  dxdt = Pack(GramDrift(gram, weights ? &weight_gradient : nullptr));
  if (spec_.trained_weights) {
    const int units = spec_.student.units;
    dxdt.tail(units) = weights ? Eigen::VectorXd(-spec_.weight_learning_rate * weight_gradient)
                               : Eigen::VectorXd::Zero(units);
  }
}

void TwoLayerFlow::ObserveInto(const Eigen::VectorXd& x, const std::vector<bool>* wanted,
                               Eigen::VectorXd* values) const {
  if (spec_.trained_weights && !HoldsWeightsOf(x)) return AtState(x).ObserveInto(x, wanted, values);
  const Eigen::MatrixXd gram = Unpack(x);
  values->resize(ObservableValueCount(observables_));
  // Observables 0 (risk) and, sampled, 1 (risk_error) come from one pass.
  const bool risk = wanted == nullptr || (*wanted)[0] || (point_backend_ && !quadrature_ && (*wanted)[1]);
  int n = 0;
  if (point_backend_) {
    const SampledTerms terms = risk ? SampleTerms(gram, false, false) : SampledTerms{};
    (*values)[n++] = terms.risk;
    if (!quadrature_) (*values)[n++] = terms.risk_error;
  } else {
    (*values)[n++] = risk ? Risk(gram) : 0.0;
  }
  const Eigen::VectorXd norms = gram.diagonal().head(p_).cwiseSqrt();
  auto cosine = [&](int i, int teacher) { return gram(i, teacher) / norms[i]; };
  const int ps = spec_.student.units, kt = spec_.teacher.units;
  const int neurons = spec_.student.neurons, es = spec_.student.ExpertVectors();
  // Best cosines over the units that are not pruned (weight 0).
  auto best = [&](auto value) {
    double b = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < ps; ++i) {
      if (units_[i].sign != 0.0) b = std::max(b, value(i));
    }
    return b;
  };
  // ... and over the expert vectors of those units (J per unit).
  auto best_expert = [&](auto value) {
    double b = -std::numeric_limits<double>::infinity();
    for (int v = 0; v < es; ++v) {
      if (units_[v / neurons].sign != 0.0) b = std::max(b, value(v));
    }
    return b;
  };
  if (gated_) {  // student expert vectors at 0..es-1, routers at es + i; teacher expert l at p_ + l, router p_ + kt + l
    for (int l = 0; l < kt; ++l) (*values)[n++] = best_expert([&](int v) { return cosine(v, p_ + l); });
    for (int l = 0; l < kt; ++l) (*values)[n++] = best_expert([&](int v) { return std::abs(cosine(v, p_ + l)); });
    if (spec_.student.HasRouters() && spec_.teacher.HasRouters()) {
      for (int l = 0; l < kt; ++l) (*values)[n++] = best([&](int i) { return cosine(es + i, p_ + kt + l); });
      for (int l = 0; l < kt; ++l) {
        (*values)[n++] = best([&](int i) {  // unit i's best neuron, and its router
          double expert = -std::numeric_limits<double>::infinity();
          for (int j = 0; j < neurons; ++j) expert = std::max(expert, cosine(i * neurons + j, p_ + l));
          return std::min(expert, cosine(es + i, p_ + kt + l));
        });
      }
      const Eigen::VectorXd all = gram.diagonal().cwiseSqrt();
      double cross = 0.0;
      for (const Unit& u : units_) {
        for (const Unit& v : units_) cross = std::max(cross, std::abs(gram(u.router, v.expert)) / (all[u.router] * all[v.expert]));
      }
      (*values)[n++] = cross;
    }
  } else {
    for (int l = 0; l < k_; ++l) (*values)[n++] = best([&](int i) { return cosine(i, p_ + l); });
    for (int l = 0; l < k_; ++l) (*values)[n++] = best([&](int i) { return std::abs(cosine(i, p_ + l)); });
  }
  if (HasRouting()) {
    const bool needed = wanted == nullptr || (*wanted)[static_cast<std::size_t>(routing_observable_)] ||
                        spec_.student.units == 2;  // two experts: a closed form, always written
    const Eigen::VectorXd routing = needed ? RoutingAccuracy(gram) : Eigen::VectorXd::Zero(c_);
    for (int c = 0; c < c_; ++c) (*values)[n++] = routing[c];
  }
  int alive = 0;
  for (int i = 0; i < ps; ++i) alive += units_[i].sign != 0.0;
  (*values)[n++] = alive;
  for (int i = 0; i < p_; ++i) {
    for (int l = 0; l < k_ + c_; ++l) (*values)[n++] = gram(i, p_ + l);
  }
  for (int i = 0; i < p_; ++i) {
    for (int j = 0; j < p_; ++j) (*values)[n++] = gram(i, j);
  }
  if (spec_.trained_weights) {
    for (int i = 0; i < ps; ++i) (*values)[n++] = units_[i].sign;
  }
}

double TwoLayerFlow::Project(Eigen::VectorXd* x, double tolerance) const {
  const Eigen::MatrixXd gram = Unpack(*x);
  const double smallest =
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(gram, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
  if (!(smallest < -tolerance)) return 0.0;
  const Eigen::MatrixXd l = PointFactor(gram);
  Eigen::MatrixXd projected = l * l.transpose();
  for (int i = 0; i < p_; ++i) {
    const double scale = projected(i, i) > 0 ? std::sqrt(gram(i, i) / projected(i, i)) : 1.0;
    projected.row(i) *= scale;
    projected.col(i) *= scale;
  }
  const Eigen::VectorXd packed = Pack(projected);
  const Eigen::Index entries = StateSize() - (spec_.trained_weights ? spec_.student.units : 0);
  const double moved = (packed.head(entries) - x->head(entries)).cwiseAbs().maxCoeff();
  x->head(entries) = packed.head(entries);
  return moved;
}

std::string TwoLayerFlow::CheckInvariants(const Eigen::VectorXd& x) const {
  const Eigen::MatrixXd gram = Unpack(x);
  for (int i = 0; i < p_ && spec_.constraint != VectorConstraint::kFree; ++i) {
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
  if (smallest < -spec_.psd_tolerance) {
    std::ostringstream os;
    os << "the Gram matrix is no longer positive semi-definite: smallest eigenvalue " << smallest
       << " < -" << spec_.psd_tolerance << " (integrate.psd_tolerance)";
    return os.str();
  }
  return {};
}

}  // namespace moeflow
