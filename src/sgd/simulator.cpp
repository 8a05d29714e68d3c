#include "moeflow/sgd/simulator.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <sstream>

#include "common/memory.hpp"
#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/sgd/compare.hpp"
#include "sgd/batch_gradient.hpp"
#include "common/random.hpp"

namespace moeflow {
namespace {

// SplitMix64: decorrelated engine seeds for the streams of one run (0: training, 1: test).
std::uint64_t StreamSeed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (stream + 1) * 0xD1B54A32D192ED03ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

using Rng = rng::Xoshiro256;

void FillNormal(Rng& rng, double* out, Eigen::Index count) {
  const rng::ZigguratNormal& normal = rng::StandardNormal();
  for (Eigen::Index i = 0; i < count; ++i) out[i] = normal(rng);
}

// Input clusters (TwoLayerSpec::clusters): x = z + ρ v_c with c uniform, v_c the vector at index
// first + c.
struct Mixture {
  int count = 0;
  double scale = 0.0;
  int first = 0;

  explicit Mixture(const TwoLayerFlow& model)
      : count(model.cluster_means()), scale(model.spec().clusters.scale),
        first(model.vectors() - model.cluster_means()) {}
  // One cluster per sample, uniform, before the sample's normals (nothing without clusters).
  void Draw(Rng& rng, Eigen::Index samples, std::vector<int>* ids) const {
    ids->resize(count > 0 ? static_cast<std::size_t>(samples) : 0);
    for (int& c : *ids) c = static_cast<int>(static_cast<double>(rng() >> 11) * 0x1.0p-53 * count);
  }
  // Adds ρ times the coordinates of v_c (row first + c of `coordinates`) to every row.
  template <typename Rows, typename Coordinates>
  void Shift(const std::vector<int>& ids, const Coordinates& coordinates, Rows& rows) const {
    for (std::size_t b = 0; b < ids.size(); ++b) rows.row(b) += scale * coordinates.row(first + ids[b]);
  }
};

// F with Ω = F Fᵀ, F (n × r) from a pivoted LDLᵀ; r counts the pivots above the round-off
// level. Returns false if Ω has a clearly negative pivot.
bool GramFactor(const Eigen::MatrixXd& gram, Eigen::MatrixXd* factor, double* worst_pivot) {
  const Eigen::LDLT<Eigen::MatrixXd> ldlt(gram);
  const Eigen::VectorXd pivots = ldlt.vectorD();
  const double scale = std::max(1.0, pivots.cwiseAbs().maxCoeff());
  const double floor = 1e-13 * scale;
  *worst_pivot = pivots.minCoeff();
  if (*worst_pivot < -1e-9 * scale) return false;
  const Eigen::MatrixXd l = ldlt.matrixL();
  const Eigen::MatrixXd pl = ldlt.transpositionsP().transpose() * l;  // Pᵀ L
  int r = 0;
  for (Eigen::Index i = 0; i < pivots.size(); ++i) r += pivots[i] > floor;
  factor->resize(gram.rows(), r);
  int c = 0;
  for (Eigen::Index i = 0; i < pivots.size(); ++i) {
    if (pivots[i] > floor) factor->col(c++) = pl.col(i) * std::sqrt(pivots[i]);
  }
  return true;
}

// One engine's state and its two operations: draw a batch's projections (and what the Gram
// update needs), and apply U' = A U − Δᵀ X.
class Engine {
 public:
  virtual ~Engine() = default;
  // The raw projections H = X Uᵀ (B × n) of a fresh batch, and its samples' clusters.
  virtual void DrawBatch(Rng& rng, Eigen::MatrixXd* h, std::vector<int>* clusters) = 0;
  // Applies the update to the student rows (a: p, delta: B × p).
  virtual void Update(const Eigen::VectorXd& a, const Eigen::MatrixXd& delta) = 0;
  virtual void Normalise() = 0;  // student rows back to unit norm (spherical)
  // Replaces the student rows by transform · (student rows) (a pruning's merge).
  virtual void Transform(const Eigen::MatrixXd& transform) = 0;
  virtual Eigen::MatrixXd Gram() const = 0;
  virtual Eigen::VectorXd StudentNorms() const = 0;
};

class VectorEngine final : public Engine {
 public:
  VectorEngine(const Eigen::MatrixXd& gram, int p, long long d, int batch, const Mixture& mixture)
      : p_(p), u_(VectorsFromGram(gram, p, d)), x_(batch, d), mixture_(mixture) {}

  void DrawBatch(Rng& rng, Eigen::MatrixXd* h, std::vector<int>* clusters) override {
    mixture_.Draw(rng, x_.rows(), clusters);
    FillNormal(rng, x_.data(), x_.size());
    mixture_.Shift(*clusters, u_, x_);
    h->noalias() = x_ * u_.transpose();
  }
  // A fixed batch: rows of a training set.
  void SetBatch(const Eigen::MatrixXd& x, Eigen::MatrixXd* h) {
    x_ = x;
    h->noalias() = x_ * u_.transpose();
  }
  void Update(const Eigen::VectorXd& a, const Eigen::MatrixXd& delta) override {
    u_.topRows(p_) = a.asDiagonal() * u_.topRows(p_);
    u_.topRows(p_).noalias() -= delta.transpose() * x_;
  }
  void Normalise() override { u_.topRows(p_).rowwise().normalize(); }
  void Transform(const Eigen::MatrixXd& transform) override { u_.topRows(p_) = (transform * u_.topRows(p_)).eval(); }
  Eigen::MatrixXd Gram() const override { return u_ * u_.transpose(); }
  Eigen::VectorXd StudentNorms() const override { return u_.topRows(p_).rowwise().norm(); }
  const Eigen::MatrixXd& vectors() const { return u_; }

 private:
  int p_;
  Eigen::MatrixXd u_;  // n × d, row-major would not help the products here
  Eigen::MatrixXd x_;  // B × d
  Mixture mixture_;
};

class OverlapEngine final : public Engine {
 public:
  OverlapEngine(const Eigen::MatrixXd& gram, int p, long long d, int batch, const Mixture& mixture)
      : mixture_(mixture), p_(p), d_(d), gram_(gram), next_(gram), lower_(Eigen::MatrixXd::Zero(gram.rows(), gram.rows())),
        raw_(batch, gram.rows()),
        xx_(batch, batch), z_(batch, gram.rows()), t_(batch, batch), tmat_(p, gram.rows()), ddelta_(p, p),
        sd_(batch, p) {}

  void DrawBatch(Rng& rng, Eigen::MatrixXd* h, std::vector<int>* clusters) override {
    const Eigen::Index batch = raw_.rows(), n = gram_.rows();
    mixture_.Draw(rng, batch, clusters);
    // h = L z with Ω = L Lᵀ: Cholesky while Ω is positive definite, the pivoted LDLᵀ otherwise.
    Eigen::Index r = n;
    const Eigen::MatrixXd* factor = &lower_;
    if (!Cholesky()) {
      double worst = 0.0;
      if (!GramFactor(gram_, &semidefinite_, &worst)) {
        std::ostringstream os;
        os << "the Gram matrix of the SGD state is not positive semi-definite (pivot " << worst << ")";
        throw Error(os.str());
      }
      factor = &semidefinite_;
      r = semidefinite_.cols();
    }
    if (z_.cols() != r) z_.resize(batch, r);
    FillNormal(rng, z_.data(), z_.size());
    // The span's coordinates of x = z + ρ v_c: those of z plus ρ times v_c's row of the factor.
    mixture_.Shift(*clusters, *factor, z_);
    const rng::ZigguratNormal& normal = rng::StandardNormal();
    if (batch == 1) {  // the common online case, without Eigen's small-product overheads
      const double* z = z_.data();
      double zz = 0.0;
      for (Eigen::Index k = 0; k < r; ++k) zz += z[k] * z[k];
      for (Eigen::Index i = 0; i < n; ++i) {
        double v = 0.0;
        for (Eigen::Index k = 0; k < r; ++k) v += (*factor)(i, k) * z[k];
        (*h)(0, i) = v;
      }
      xx_(0, 0) = zz + rng::ChiSquared(rng, static_cast<double>(d_ - r));
    } else {
      h->noalias() = z_ * factor->transpose();
      // X Xᵀ = Z Zᵀ + W, W ~ Wishart_B(d − r) by Bartlett's decomposition W = T Tᵀ.
      t_.setZero();
      for (Eigen::Index i = 0; i < batch; ++i) {
        t_(i, i) = std::sqrt(rng::ChiSquared(rng, static_cast<double>(d_ - r - i)));
        for (Eigen::Index j = 0; j < i; ++j) t_(i, j) = normal(rng);
      }
      xx_.noalias() = z_ * z_.transpose();
      xx_.noalias() += t_ * t_.transpose();
    }
    raw_ = *h;
  }
  void Update(const Eigen::VectorXd& a, const Eigen::MatrixXd& delta) override {
    // With T = Δᵀ H (p × n) and a_j = 1 for teachers, on the student rows:
    //   Ω'_ij = a_i a_j Ω_ij − a_i T_ji [j student] − T_ij a_j + (Δᵀ XXᵀ Δ)_ij [j student].
    const Eigen::Index n = gram_.rows();
    if (raw_.rows() == 1) {
      const double xx = xx_(0, 0);
      for (Eigen::Index i = 0; i < p_; ++i) {
        for (Eigen::Index j = 0; j < n; ++j) tmat_(i, j) = delta(0, i) * raw_(0, j);
        for (Eigen::Index j = 0; j < p_; ++j) ddelta_(i, j) = xx * delta(0, i) * delta(0, j);
      }
    } else {
      tmat_.noalias() = delta.transpose() * raw_;
      sd_.noalias() = xx_ * delta;
      ddelta_.noalias() = delta.transpose() * sd_;
    }
    for (Eigen::Index i = 0; i < p_; ++i) {
      for (Eigen::Index j = 0; j < n; ++j) {
        const bool student = j < p_;
        const double aj = student ? a[j] : 1.0;
        double v = a[i] * aj * gram_(i, j) - tmat_(i, j) * aj;
        if (student) v += ddelta_(i, j) - a[i] * tmat_(j, i);
        next_(i, j) = v;
      }
    }
    for (Eigen::Index i = 0; i < p_; ++i) {
      for (Eigen::Index j = 0; j < n; ++j) {
        const double v = j < p_ ? 0.5 * (next_(i, j) + next_(j, i)) : next_(i, j);
        gram_(i, j) = v;
        gram_(j, i) = v;
      }
    }
  }
  void Normalise() override {
    const Eigen::Index n = gram_.rows();
    for (Eigen::Index i = 0; i < p_; ++i) inverse_norm_[i] = 1.0 / std::sqrt(gram_(i, i));
    for (Eigen::Index i = 0; i < p_; ++i) {
      for (Eigen::Index j = i; j < n; ++j) {
        const double v = gram_(i, j) * inverse_norm_[i] * (j < p_ ? inverse_norm_[j] : 1.0);
        gram_(i, j) = v;
        gram_(j, i) = v;
      }
      gram_(i, i) = 1.0;
    }
  }
  void Transform(const Eigen::MatrixXd& transform) override { gram_ = TransformStudents(gram_, transform); }
  Eigen::MatrixXd Gram() const override { return gram_; }
  Eigen::VectorXd StudentNorms() const override { return gram_.diagonal().head(p_).cwiseSqrt(); }

 private:
  // lower_ = the Cholesky factor of Ω; false if a pivot is not clearly positive.
  bool Cholesky() {
    const Eigen::Index n = gram_.rows();
    const double floor = 1e-13 * std::max(1.0, gram_.diagonal().maxCoeff());
    for (Eigen::Index j = 0; j < n; ++j) {
      double diagonal = gram_(j, j);
      for (Eigen::Index k = 0; k < j; ++k) diagonal -= lower_(j, k) * lower_(j, k);
      if (!(diagonal > floor)) return false;
      const double root = std::sqrt(diagonal);
      lower_(j, j) = root;
      for (Eigen::Index i = j + 1; i < n; ++i) {
        double v = gram_(i, j);
        for (Eigen::Index k = 0; k < j; ++k) v -= lower_(i, k) * lower_(j, k);
        lower_(i, j) = v / root;
      }
    }
    return true;
  }

  Mixture mixture_;
  int p_;
  long long d_;
  Eigen::MatrixXd gram_, next_;
  Eigen::MatrixXd lower_, semidefinite_;
  Eigen::MatrixXd raw_, xx_, z_, t_, tmat_, ddelta_, sd_;
  Eigen::VectorXd inverse_norm_ = Eigen::VectorXd::Zero(p_);
};

// A fixed training set: inputs, labels, and the order of the current epoch.
struct TrainingSet {
  Eigen::MatrixXd x;  // n × d
  Eigen::VectorXd y;
  std::vector<int> clusters;  // each sample's cluster (input clusters only)
  std::vector<int> order;
  std::size_t next = 0;
};

// The model's Gram matrix of directions (normalised: cosines) from the raw Gram matrix.
Eigen::MatrixXd ModelGramOf(const TwoLayerFlow& model, const Eigen::MatrixXd& raw) {
  if (model.spec().constraint != VectorConstraint::kNormalised) return raw;
  Eigen::VectorXd scale = Eigen::VectorXd::Ones(raw.rows());
  scale.head(model.students()) = raw.diagonal().head(model.students()).cwiseSqrt().cwiseInverse();
  Eigen::MatrixXd g = scale.asDiagonal() * raw * scale.asDiagonal();
  g.diagonal().head(model.students()).setOnes();
  return g;
}

// The recorded state of a run at one step.
class Recorder {
 public:
  Recorder(const TwoLayerFlow& model, const SgdOptions& options)
      : options_(options), observables_(SgdObservables(model, options)) {}

  const std::vector<ObservableInfo>& observables() const { return observables_; }

  // `current`: the model with the run's current (pruned) weights. `wanted` (null: all) as in
  // FlowSystem::ObserveSome: for event checks, which need only what the pending events read (the
  // model's observables come first, so the flags index them too).
  Eigen::VectorXd Values(const TwoLayerFlow& current, const Eigen::MatrixXd& raw_gram, double train_risk,
                         double test_risk, const std::vector<bool>* wanted) const {
    Eigen::VectorXd base;
    const Eigen::VectorXd x = current.Pack(ModelGramOf(current, raw_gram));
    if (wanted == nullptr) {
      current.Observe(x, &base);
    } else {
      current.ObserveSome(x, *wanted, &base);
    }
    const int p = current.students();
    Eigen::VectorXd values(ObservableValueCount(observables_));
    values.head(base.size()) = base;
    values.segment(base.size(), p) = raw_gram.diagonal().head(p).cwiseSqrt();
    Eigen::Index n = base.size() + p;
    if (options_.samples > 0) values[n++] = train_risk;
    if (options_.test_samples > 0) values[n++] = test_risk;
    return values;
  }

 private:
  const SgdOptions& options_;
  std::vector<ObservableInfo> observables_;
};

}  // namespace

const char* ToString(SgdEngine engine) {
  switch (engine) {
    case SgdEngine::kAuto: return "auto";
    case SgdEngine::kVectors: return "vectors";
    case SgdEngine::kOverlaps: return "overlaps";
  }
  return "?";
}

SgdEngine SgdOptions::ResolvedEngine() const {
  if (engine != SgdEngine::kAuto) return engine;
  return samples > 0 ? SgdEngine::kVectors : SgdEngine::kOverlaps;
}

void SgdOptions::Validate(int vectors) const {
  if (learning_rate == 0.0) {
    throw InputError("key 'sgd.lr' is missing: this model's dynamics is gradient flow, so SGD has no default "
                     "learning rate; set sgd.lr (and sgd.lr_exponent for η = lr · d^(-lr_exponent))");
  }
  if (!(learning_rate > 0) || !std::isfinite(learning_rate)) {
    ThrowBadValue("sgd.lr", detail::FormatNumber(learning_rate), "must be a finite number > 0");
  }
  if (batch < 1) ThrowBadValue("sgd.batch", std::to_string(batch), "must be >= 1");
  if (samples < 0) ThrowBadValue("sgd.samples", std::to_string(samples), "must be 0 (online) or >= 1");
  if (samples > 0 && samples < batch) {
    ThrowBadValue("sgd.samples", std::to_string(samples), "must be >= sgd.batch = " + std::to_string(batch));
  }
  if (samples > 0 && engine == SgdEngine::kOverlaps) {
    ThrowBadValue("sgd.engine", "overlaps",
                  "simulates online SGD only (fresh samples); a fixed training set (sgd.samples > 0) needs "
                  "sgd.engine = vectors or auto");
  }
  if (d < vectors) {
    ThrowBadValue("d", std::to_string(d), "must be >= the number of vectors (" + std::to_string(vectors) + ") for SGD");
  }
  if (ResolvedEngine() == SgdEngine::kOverlaps && d < vectors + batch) {
    ThrowBadValue("d", std::to_string(d),
                  "must be >= vectors + batch = " + std::to_string(vectors + batch) + " for sgd.engine = overlaps");
  }
  if (ResolvedEngine() == SgdEngine::kVectors) {
    // The d-dimensional arrays: the training set (n x d), the vectors and a batch ((vectors +
    // 2 batch) x d: inputs and their gradient).
    const double rows = static_cast<double>(samples) + vectors + 2.0 * batch;
    const double bytes = 8.0 * rows * static_cast<double>(d);
    if (samples > 0) {
      detail::CheckFitsInMemory("sgd.samples", std::to_string(samples),
                                "at d = " + std::to_string(d) + " (the training set, n x d values)", bytes,
                                "lower sgd.samples or d");
    } else {
      std::string what = "for ";  // appended, not prepended: GCC 12 warns (-Wrestrict) on "(" + string
      what += detail::FormatNumber(rows);
      what += " vectors of d values (the model's and a batch's)";
      detail::CheckFitsInMemory("d", std::to_string(d), what, bytes,
                                "lower d, or simulate online SGD in overlap space (sgd.engine = overlaps)");
    }
  }
  if (!(event_resolution > 0)) {
    ThrowBadValue("sgd.event_resolution", detail::FormatNumber(event_resolution), "must be > 0");
  }
}

std::vector<ObservableInfo> SgdObservables(const TwoLayerFlow& model, const SgdOptions& options) {
  std::vector<ObservableInfo> o = model.Observables();
  o.push_back({"norm", model.students(), 1, "norm of each student vector (SGD: grows under normalised parameters)"});
  if (options.samples > 0) o.push_back({"train_risk", 1, 1, "empirical risk on the training set, ½ mean (f - y)²"});
  if (options.test_samples > 0) {
    o.push_back({"test_risk_empirical", 1, 1, "empirical risk on sgd.test_samples fresh samples, ½ mean (f - y)²"});
  }
  return o;
}

Eigen::MatrixXd VectorsFromGram(const Eigen::MatrixXd& gram, int students, long long dimension) {
  const int n = static_cast<int>(gram.rows()), t = n - students;
  if (dimension < n) {
    ThrowBadValue("d", std::to_string(dimension), "must be >= the number of vectors (" + std::to_string(n) + ")");
  }
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(n, dimension);
  // Teachers in the first t coordinates: the rows of the Cholesky factor C of their Gram matrix
  // (the axes themselves when orthonormal); a student's coordinates there are M C⁻ᵀ.
  const Eigen::LLT<Eigen::MatrixXd> teachers(gram.bottomRightCorner(t, t));
  if (teachers.info() != Eigen::Success) {
    throw InputError("the teachers' Gram matrix is not positive definite: no linearly independent teacher vectors "
                     "have these overlaps");
  }
  const Eigen::MatrixXd c = teachers.matrixL();
  u.bottomLeftCorner(t, t) = c;
  const Eigen::MatrixXd m =
      c.triangularView<Eigen::Lower>().solve(gram.topRightCorner(students, t).transpose()).transpose();
  u.topLeftCorner(students, t) = m;
  const Eigen::MatrixXd schur = gram.topLeftCorner(students, students) - m * m.transpose();
  Eigen::MatrixXd factor;
  double worst = 0;
  if (!GramFactor(schur, &factor, &worst)) {
    throw InputError("the initial Gram matrix is not positive semi-definite (pivot " + detail::FormatNumber(worst) +
                     "): no vectors have these overlaps");
  }
  u.block(0, t, students, factor.cols()) = factor;
  return u;
}

SgdRun SimulateSgd(const TwoLayerFlow& model, const Eigen::MatrixXd& initial_gram, const SgdOptions& options,
                   const IntegratorOptions& integrator, const std::vector<EventSpec>& events, std::uint64_t seed,
                   const SgdControl& control) {
  const auto start = std::chrono::steady_clock::now();
  const int p = model.students(), n = model.vectors();
  options.Validate(n);
  SgdRun run;
  const Recorder recorder(model, options);
  run.trajectory.observables = recorder.observables();
  detail::CheckTrajectoryFitsInMemory(integrator.output_times.size(),
                                      static_cast<std::size_t>(ObservableValueCount(run.trajectory.observables)));
  run.seed = seed;
  run.initial_gram = initial_gram;
  Rng rng(StreamSeed(seed, 0)), test_rng(StreamSeed(seed, 1));
  BatchGradient gradient(model);
  const VectorConstraint constraint = model.spec().constraint;
  const double eta = options.learning_rate;
  const int batch = options.batch;

  const Mixture mixture(model);
  std::unique_ptr<Engine> engine;
  VectorEngine* vectors = nullptr;
  if (options.ResolvedEngine() == SgdEngine::kVectors) {
    auto v = std::make_unique<VectorEngine>(initial_gram, p, options.d, batch, mixture);
    vectors = v.get();
    engine = std::move(v);
  } else {
    engine = std::make_unique<OverlapEngine>(initial_gram, p, options.d, batch, mixture);
  }

  // The training set is drawn batch by batch in the order online SGD draws its batches (inputs,
  // then label noises) and the first epoch visits it in that order: a run whose steps fit in
  // one epoch is bit-identical to the online run of the same seed, and the difference between
  // the two measures the reuse of samples alone (common random numbers). Later epochs are
  // reshuffled.
  TrainingSet train;
  if (options.samples > 0) {
    train.x.resize(options.samples, options.d);
    Eigen::VectorXd noise(options.samples);
    Eigen::MatrixXd chunk(batch, options.d);
    Eigen::VectorXd chunk_noise(batch);
    std::vector<int> chunk_clusters;
    for (long long first = 0; first < options.samples; first += batch) {
      mixture.Draw(rng, batch, &chunk_clusters);
      FillNormal(rng, chunk.data(), chunk.size());
      mixture.Shift(chunk_clusters, vectors->vectors(), chunk);
      FillNormal(rng, chunk_noise.data(), batch);
      const long long rows = std::min<long long>(batch, options.samples - first);
      train.x.middleRows(first, rows) = chunk.topRows(rows);
      noise.segment(first, rows) = chunk_noise.head(rows);
      if (!chunk_clusters.empty()) train.clusters.insert(train.clusters.end(), chunk_clusters.begin(), chunk_clusters.begin() + rows);
    }
    const Eigen::MatrixXd h = train.x * vectors->vectors().transpose();
    noise *= std::sqrt(model.spec().noise_variance);
    gradient.Labels(h, noise, train.clusters, &train.y);
    train.order.resize(static_cast<std::size_t>(options.samples));
    std::iota(train.order.begin(), train.order.end(), 0);
  }

  std::vector<ObservableSelector> selectors;
  for (const EventSpec& e : events) selectors.emplace_back(e.observable, run.trajectory.observables, "event." + e.name);
  run.summary.events.resize(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) run.summary.events[i].spec = events[i];

  Eigen::MatrixXd h(batch, n), hbar(batch, n), g(batch, p), delta(batch, p);
  Eigen::MatrixXd xb(options.samples > 0 ? batch : 0, options.samples > 0 ? options.d : 0);  // a training batch
  Eigen::VectorXd residual(batch), noise(batch), a(p), labels(batch), norms = Eigen::VectorXd::Ones(p);
  std::vector<int> clusters;
  const double noise_sd = std::sqrt(model.spec().noise_variance);
  // The protocol: each stage's model (pruned weights, multipliers) and stop rule.
  const std::vector<Stage> stages = options.stages.empty() ? std::vector<Stage>{WholeRunStage(model.spec())}
                                                           : options.stages;
  std::size_t stage = 0;
  double stage_start = 0.0;
  int until = -1;  // the index of the current stage's `until` event
  std::vector<double> multiplier(p);
  TwoLayerFlow current = model;  // the current stage's model: observables, weights, multipliers
  std::string pruned;            // what the current stage's pruning removed
  const bool trained_weights = model.spec().trained_weights;
  std::vector<double> weights = model.StudentWeights();  // trained: updated every step, `current` at checks
  Eigen::VectorXd weight_gradient;
  auto enter_stage = [&](double t) {
    stage_start = t;
    until = -1;
    pruned.clear();
    if (stage >= stages.size()) return;
    if (trained_weights) current = current.WithStudentWeights(weights);
    // Pruning reads the model's Gram matrix (normalised: of the directions); a merge's transform
    // acts on those, and on the raw vectors as diag(‖u‖) · transform · diag(1/‖u‖).
    Eigen::MatrixXd transform;
    current = StageModel(current, stages[stage], ModelGramOf(current, engine->Gram()), &pruned, &transform);
    if (transform.size() > 0) {
      if (constraint == VectorConstraint::kNormalised) {
        const Eigen::VectorXd lengths = engine->StudentNorms();
        transform = lengths.asDiagonal() * transform * lengths.cwiseInverse().asDiagonal();
      }
      engine->Transform(transform);
    }
    weights = current.StudentWeights();
    gradient.SetStudentWeights(weights);
    for (std::size_t e = 0; e < events.size(); ++e) {
      if (events[e].name == stages[stage].until) until = static_cast<int>(e);
    }
    for (int i = 0; i < p; ++i) multiplier[i] = current.StudentMultiplier(i);
  };
  enter_stage(0.0);

  // The norms the model divides the projections by: ‖w‖ when normalised, else 1.
  auto model_norms = [&]() -> Eigen::VectorXd {
    return constraint == VectorConstraint::kNormalised ? engine->StudentNorms() : Eigen::VectorXd::Ones(p);
  };
  // Empirical risks at a record.
  auto train_risk = [&]() {
    if (options.samples == 0) return 0.0;
    // The labels are stored: only the students' projections are needed.
    const Eigen::MatrixXd hh = train.x * vectors->vectors().topRows(p).transpose();
    return gradient.Risk(hh, model_norms(), train.y);
  };
  auto test_risk = [&]() {
    if (options.test_samples == 0) return 0.0;
    double sum = 0.0;
    long long done = 0;
    // Independent engine draws on the test stream, in chunks of the batch size.
    while (done < options.test_samples) {
      Eigen::MatrixXd th;
      std::vector<int> tc;
      mixture.Draw(test_rng, batch, &tc);
      if (vectors) {
        Eigen::MatrixXd tx(batch, options.d);
        FillNormal(test_rng, tx.data(), tx.size());
        mixture.Shift(tc, vectors->vectors(), tx);
        th = tx * vectors->vectors().transpose();
      } else {
        Eigen::MatrixXd f;
        double worst = 0;
        GramFactor(engine->Gram(), &f, &worst);
        Eigen::MatrixXd z(batch, f.cols());
        FillNormal(test_rng, z.data(), z.size());
        mixture.Shift(tc, f, z);
        th = z * f.transpose();
      }
      Eigen::VectorXd tn(batch);
      FillNormal(test_rng, tn.data(), tn.size());
      tn *= noise_sd;
      Eigen::VectorXd ty;
      gradient.Labels(th, tn, tc, &ty);
      sum += gradient.Risk(th, model_norms(), ty) * static_cast<double>(batch);
      done += batch;
    }
    return sum / static_cast<double>(done);
  };

  const std::vector<double>& grid = integrator.output_times;
  std::size_t next_record = 0;
  long long step = 0, next_check = 0, reported = 0;
  bool finished = false;
  long long last_recorded = -1;
  auto observe = [&](bool record) {
    record = record && step != last_recorded;
    if (record) last_recorded = step;
    const Eigen::MatrixXd raw = engine->Gram();
    const double t = eta * static_cast<double>(step);
    if (trained_weights) current = current.WithStudentWeights(weights);
    const std::vector<bool> wanted =
        ObservablesPendingEventsRead(selectors, run.summary.events, static_cast<int>(recorder.observables().size()));
    const Eigen::VectorXd values = recorder.Values(current, raw, record ? train_risk() : 0.0, record ? test_risk() : 0.0,
                                                   record ? nullptr : &wanted);
    if (!values.allFinite() || !raw.allFinite()) {
      run.summary.termination = Termination::kNotFinite;
      run.summary.message = "a NaN or infinity in the overlaps at t = " + detail::FormatNumber(t) + " (step " +
                            std::to_string(step) + ")";
      finished = true;
    } else if (raw.cwiseAbs().maxCoeff() > integrator.divergence_threshold) {
      run.summary.termination = Termination::kDiverged;
      run.summary.message = "diverged: max |overlap| = " + detail::FormatNumber(raw.cwiseAbs().maxCoeff()) +
                            " > " + detail::FormatNumber(integrator.divergence_threshold) + " at t = " +
                            detail::FormatNumber(t) + " (step " + std::to_string(step) + ")";
      finished = true;
    }
    if (record) {
      run.trajectory.time.push_back(t);
      run.trajectory.values.push_back(values);
      run.steps.push_back(static_cast<double>(step));
    }
    if (step == 0) {  // relative thresholds from this seed's own start
      for (std::size_t i = 0; i < selectors.size(); ++i) {
        FixRelativeThreshold(&run.summary.events[i].spec, selectors[i].Evaluate(values));
      }
    }
    for (std::size_t i = 0; i < selectors.size() && !finished; ++i) {
      EventRecord& e = run.summary.events[i];
      if (e.occurred) continue;
      const double v = selectors[i].Evaluate(values);
      if (!EventConditionHolds(e.spec, v)) continue;
      e.occurred = true;
      e.time = t;
      e.value = v;
      if (e.spec.stop) {
        run.summary.termination = Termination::kStoppedOnEvent;
        run.summary.message = "stopped on event '" + e.spec.name + "' at t = " + detail::FormatNumber(t) +
                              " (step " + std::to_string(step) + ")";
        finished = true;
      }
    }
    const long long geometric = static_cast<long long>(std::ceil(static_cast<double>(step) * (1.0 + options.event_resolution)));
    next_check = std::max(step + 1, geometric);
  };

  const long long last_step = std::min<long long>(
      options.max_steps, static_cast<long long>(std::ceil(integrator.t_end / eta - 1e-9)));
  while (true) {
    const double t = eta * static_cast<double>(step);
    bool record = false;
    while (next_record < grid.size() && grid[next_record] <= t + 1e-12 * std::max(1.0, t)) {
      record = true;
      ++next_record;
    }
    if (record || step >= next_check || step >= last_step) observe(record || step >= last_step);
    if (finished) break;
    // Stage ends: its duration elapsed or its `until` event happened (events are seen at checks).
    bool protocol_done = false;
    while (stage < stages.size()) {
      const bool elapsed = t - stage_start >= stages[stage].duration - 1e-12 * std::max(1.0, t);
      const bool event = until >= 0 && run.summary.events[static_cast<std::size_t>(until)].occurred;
      if (!elapsed && !event) break;
      run.stages.push_back(
          {stages[stage].name, stage_start, t, event ? "event " + stages[stage].until : "duration", pruned});
      observe(true);  // a row at every stage boundary
      ++stage;
      enter_stage(t);
      protocol_done = stage == stages.size();
    }
    if (finished) break;
    if (protocol_done) {
      run.summary.termination = Termination::kReachedEnd;
      run.summary.message = "the protocol's last stage ended at t = " + detail::FormatNumber(t);
      break;
    }
    if (step >= last_step) {
      run.summary.termination = step >= options.max_steps && t < integrator.t_end ? Termination::kMaxSteps
                                                                                   : Termination::kReachedEnd;
      run.summary.message = run.summary.termination == Termination::kMaxSteps
                                ? "sgd.max_steps = " + std::to_string(options.max_steps) + " reached at t = " +
                                      detail::FormatNumber(t)
                                : "reached t_end = " + detail::FormatNumber(integrator.t_end);
      break;
    }
    if ((step & 4095) == 0 && control.interrupt && control.interrupt->load()) {
      run.summary.termination = Termination::kInterrupted;
      run.summary.message = "interrupted at t = " + detail::FormatNumber(t);
      break;
    }
    if (control.progress && step - reported >= 65536) {
      control.progress(step - reported);
      reported = step;
    }

    // One SGD step.
    if (options.samples > 0) {
      if (train.next + static_cast<std::size_t>(batch) > train.order.size()) {
        std::shuffle(train.order.begin(), train.order.end(), rng);
        train.next = 0;
      }
      for (int b = 0; b < batch; ++b) {
        const int row = train.order[train.next++];
        xb.row(b) = train.x.row(row);
        labels[b] = train.y[row];
      }
      vectors->SetBatch(xb, &h);
    } else {
      try {
        engine->DrawBatch(rng, &h, &clusters);
      } catch (const Error& e) {  // the overlap state left the PSD cone: an outcome, not a crash
        run.summary.termination = Termination::kInvariantViolated;
        run.summary.message = std::string(e.what()) + " at t = " + detail::FormatNumber(t) + " (step " +
                              std::to_string(step) + ")";
        break;
      }
      FillNormal(rng, noise.data(), batch);
      noise *= noise_sd;
      gradient.Labels(h, noise, clusters, &labels);
    }
    if (constraint == VectorConstraint::kNormalised) norms = engine->StudentNorms();
    gradient.Compute(h, norms, labels, &hbar, &residual, &g);
    if (trained_weights && current.spec().weight_learning_rate != 0.0) {  // a_i −= ηΛ_a mean_b F_b ∂f/∂a_i
      gradient.WeightGradient(hbar, residual, &weight_gradient);
      const double scale = eta * current.spec().weight_learning_rate / static_cast<double>(batch);
      for (int i = 0; i < static_cast<int>(weights.size()); ++i) weights[i] -= scale * weight_gradient[i];
      gradient.SetStudentWeights(weights);
    }
    for (int i = 0; i < p; ++i) {
      const double norm = constraint == VectorConstraint::kFree ? 1.0 : norms[i];
      const double scale = eta * multiplier[i] / (static_cast<double>(batch) * norm);
      delta.col(i) = scale * g.col(i);
      a[i] = constraint == VectorConstraint::kFree ? 1.0 : 1.0 + scale * g.col(i).dot(hbar.col(i)) / norm;
    }
    engine->Update(a, delta);
    if (constraint == VectorConstraint::kSpherical) engine->Normalise();
    ++step;
    if (!residual.allFinite()) {
      run.summary.termination = Termination::kNotFinite;
      run.summary.message = "a NaN or infinity in the output at step " + std::to_string(step);
      break;
    }
  }
  if (stage < stages.size()) {
    const std::string ended = run.summary.termination == Termination::kReachedEnd
                                  ? "t_end"
                                  : (run.summary.termination == Termination::kStoppedOnEvent
                                         ? "stop event"
                                         : std::string(ToString(run.summary.termination)));
    run.stages.push_back({stages[stage].name, stage_start, eta * static_cast<double>(step), ended, pruned});
  }
  if (control.progress && step > reported) control.progress(step - reported);
  run.summary.accepted_steps = step;
  run.summary.t_final = eta * static_cast<double>(step);
  run.summary.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

std::vector<SgdRun> SimulateSgdSeeds(const TwoLayerFlow& model,
                                     const std::function<Eigen::MatrixXd(std::uint64_t)>& initial_gram,
                                     const SgdOptions& options, const IntegratorOptions& integrator,
                                     const std::vector<EventSpec>& events, const std::vector<std::uint64_t>& seeds,
                                     int threads, const SgdControl& control) {
  std::vector<SgdRun> runs(seeds.size());
  ParallelFor(seeds.size(), threads, [&](std::size_t i) {
    runs[i] = SimulateSgd(model, initial_gram(seeds[i]), options, integrator, events, seeds[i], control);
  });
  return runs;
}

}  // namespace moeflow
