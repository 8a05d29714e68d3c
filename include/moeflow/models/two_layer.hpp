// moeflow/models/two_layer.hpp
// Teacher-student two-layer networks as an ODE over the Gram matrix of their vectors
// (theory.md §1):
//   student f(x) = Σ_i a σ(w_i·x),  i = 1..p,     teacher y = Σ_l a* σ*(w*_l·x) + ν,  Var ν = σ²,
// teacher vectors orthonormal; student vectors free, or on the unit sphere (spherical gradient
// flow). The single-index model (theory.md §3.1) is p = k = 1, the soft committee machine of
// Saad & Solla free vectors with σ = σ* = erf(·/√2).
//
// One general mechanism builds the drift. With u_a the vectors (students first, then
// teachers), Ω their Gram matrix, ℓ = ½(f − y)² and g_a = ∂ℓ/∂h_a, the gradient overlaps are
//   D_ab = ∇_{u_a} R · u_b = E[g_a h_b] = a Σ_v s_v E[σ'(h_a) σ_v(h_v) h_b]     (first-order form)
// (s_v = a for students, −a* for teachers), and
//   free:       du_a/dt · u_b = −Λ D_ab,
//   spherical:  du_a/dt · u_b = −Λ (D_ab − D_aa Ω_ab)          (tangent projection),
//   dΩ_ab/dt = du_a/dt·u_b + u_a·du_b/dt  (+ (η̃/B) Λ² E[g_a g_b] for students a, b in the
//   online-SGD limit; spherical vectors also lose (η̃/2B) Λ² (E[g_a²] + E[g_b²]) Ω_ab, and
//   (η̃/2B) Λ² E[g_a²] Ω_al with a teacher l, from the renormalisation of every SGD step).
// With unit-variance projections (spherical) the pair expectations are Mehler series and
// D = 2 G Ω with G = ∂R/∂Ω, a fast path of the same quantity; otherwise the Gaussian
// expectation engine computes them, through the forms it prepares once per term at zero means
// (FindCentredForm: closed forms for erf and relu, Isserlis' theorem compiled for polynomial
// links) and through Expect elsewhere.
//
// Gated units π(v·x) σ(w·x) (soft routing, theory.md §3.3) add a router vector per unit. Their
// gradient overlaps come from Stein's lemma, D_ab = Σ_c A_ac Ω_cb with
// A_ac = E[∂_a F ∂_c F] + E[F ∂_a∂_c F] (F = f − y), whose terms are the pair expectations of
// GatedPairKernel (exact for polynomial experts). Normalised vectors (the model uses v/‖v‖,
// w/‖w‖) move their directions as spherical flow with multiplier Λ/‖·‖².
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moeflow/gauss/expectation.hpp"
#include "moeflow/gauss/gated_pair.hpp"
#include "moeflow/integrate/flow_system.hpp"
#include "moeflow/links/hermite.hpp"
#include "moeflow/links/link.hpp"

namespace moeflow {

// `units` copies of weight · π(v·x) σ(w·x): an expert link σ with its expert vector w, and
// optionally (gate != nullptr) a gate link π with its router vector v (soft routing, theory.md
// §3.3: each expert has its own gate; the gates do not sum to one), or a router that couples
// the units (top_k > 0, theory.md §3.4–3.5): logits v_i·x/τ, the top_k largest selected, the
// selected experts combined with the softmax of their logits (softmax) or with weight 1 each;
// top_k = units with softmax is a plain softmax router. With selection_temperature τ_s > 0 the
// selection is soft: unit i is weighted by μ_i = logistic((l_i − t)/τ_s), t the midpoint of the
// k-th and (k+1)-th largest logits l = v·x/τ, and the gradient flows through μ and t (src/models/
// unit_output.hpp); τ_s → 0 is the hard top-k.
struct UnitBlock {
  int units = 1;
  LinkPtr link;         // σ
  double weight = 1.0;  // second-layer weight of every unit (fixed)
  LinkPtr gate;         // π, or nullptr for an ungated unit
  int top_k = 0;             // > 0: top-k routing (no gate)
  double temperature = 1.0;  // τ of the router logits
  bool softmax = true;       // top-k: softmax weights over the selected experts (false: weight 1)
  double selection_temperature = 0.0;  // τ_s of the soft top-k; 0: hard selection
  // Per-unit expert links (ungated blocks; empty: `link` for every unit), e.g. a teacher whose
  // components have different links.
  std::vector<LinkPtr> links;
  // Neurons per expert (top-k routers only): expert i is a two-layer network
  // o_i = a_i Σ_{j<J} σ(w_(i,j)·x) whose J vectors sit at i·J..i·J + J − 1 of the block.
  int neurons = 1;

  bool HasRouters() const { return gate != nullptr || top_k > 0; }
  int ExpertVectors() const { return units * neurons; }
  int Vectors() const { return ExpertVectors() + (HasRouters() ? units : 0); }
  const LinkPtr& LinkOf(int unit) const { return links.empty() ? link : links[static_cast<std::size_t>(unit)]; }
};

// Inputs from a mixture of C clusters (theory.md §3.4): c uniform on {1..C}, x ~ N(ρ v_c, I_d),
// where the v_c are fixed unit vectors (the directions of the cluster means), orthonormal, and
// orthogonal to the teacher vectors unless `teacher_overlaps` says otherwise. They follow the
// teacher vectors in the vector order, so their overlaps with the students are state: the mean
// of projection a in cluster c is μ_a = ρ Ω(a, v_c). Teacher unit l has second-layer weight
// W(l, c) in cluster c (a cluster-dependent teacher such as Kawata et al.'s
// y = f*_c(w*_c·x) + s_c g*(w*_g·x)).
struct InputClusters {
  int count = 0;        // C; 0: x ~ N(0, I_d)
  double scale = 0.0;   // ρ
  Eigen::MatrixXd teacher_weights;   // teacher units × C; empty: teacher.weight in every cluster
  Eigen::MatrixXd teacher_overlaps;  // C × teacher vectors, v_c · w*; empty: zero
};

// free: unconstrained; spherical: ‖w‖ = 1 with the tangent projection; normalised: the model
// uses w/‖w‖, gradient flow conserves ‖w‖ and moves w/‖w‖ as spherical flow with Λ/‖w‖².
enum class VectorConstraint { kFree, kSpherical, kNormalised };

struct TwoLayerSpec {
  UnitBlock student;
  UnitBlock teacher;
  VectorConstraint constraint = VectorConstraint::kSpherical;
  double noise_variance = 0.0;  // label noise σ²; adds σ²/2 to the risk
  double learning_rate = 1.0;   // multiplier Λ of the student expert vectors (0 freezes them)
  double router_learning_rate = 1.0;  // multiplier of the student router vectors
  // Normalised parameterisation: the (conserved) norms of the student expert and router vectors.
  double expert_norm = 1.0;
  double router_norm = 1.0;
  // η̃/B: the online-SGD term (η̃/B) Λ² E[g_a g_b] of theory.md §1 (0: pure gradient flow).
  double online_sgd_rate = 0.0;
  // Per-unit second-layer weights of the student (empty: every unit has student.weight). A unit
  // of weight 0 is pruned: it contributes nothing, receives no gradient and is left out of the
  // best-cosine observables.
  std::vector<double> student_weights;
  // Trained second-layer weights (`student.weights_lr`): the state gains the per-unit student
  // weights after the overlaps, moving as da_i/dt = −weight_learning_rate · ∂R/∂a_i. f is linear
  // in them for every kind of block (f = Σ_i a_i φ_i), so ∂R/∂a_i = E[(f − y) φ_i] (WeightGradient).
  // A weight at exactly 0 is a pruned unit and stays 0.
  bool trained_weights = false;
  double weight_learning_rate = 1.0;
  // Population expectations by fixed-point Monte Carlo over the projections (always for top-k
  // routing, which couples all units; on request for any model, as a cross-check): this many
  // standard normal points (antithetic pairs), drawn once from `population_seed`, so that the
  // drift is a deterministic function of the state.
  bool sampled = false;
  // Population expectations by a deterministic rule (population.backend = quadrature) for models
  // whose links are polynomials and whose routers, if any, are softmax routers over all experts
  // (top_k = units): given the logits, the integrand is a polynomial in the projections, which a
  // Smolyak sparse grid of Gauss–Hermite rules integrates exactly; the M − 1 directions of the
  // logit differences take a trapezoidal rule of `gate_nodes` points each (geometric convergence
  // for the smooth softmax). Unlike sampling it does not break the symmetries that make a drift
  // vanish at zero overlap, so escapes from overlaps O(d^(-1/2)) are resolved.
  // gate_nodes = 0: from the temperature (an error ≤ 1e-10 for unit-norm routers; 141 at τ = 0.3).
  bool quadrature = false;
  int gate_nodes = 0;
  // The smallest eigenvalue of Ω may not go below −this (an invariant violation ends the run).
  // Converged students make Ω singular (a student equal to a teacher, duplicates, cancelling
  // pairs, or a sum of students equal to a sum of teachers): its smallest eigenvalue then sits at
  // 0 and drifts by the accumulated integration error, which this bound must exceed.
  double psd_tolerance = 1e-6;
  int population_samples = 1 << 15;
  std::uint64_t population_seed = 20251001;
  // Overlaps of the teacher vectors (k × k in the vector order, unit diagonal, positive
  // definite); empty: orthonormal teachers.
  Eigen::MatrixXd teacher_gram;
  InputClusters clusters;
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

// The vectors are ordered: student experts, student routers (if gated), teacher experts,
// teacher routers (if gated), cluster means (if any); "students" counts student vectors and
// "teachers" the fixed vectors after them (teacher vectors, then cluster means).
class TwoLayerFlow final : public FlowSystem {
 public:
  // Throws InputError for combinations not derived yet (the online-SGD term for gated units).
  explicit TwoLayerFlow(TwoLayerSpec spec);

  const TwoLayerSpec& spec() const { return spec_; }
  // The same model with other learning-rate multipliers (a stage of a protocol); weight_lr: of the
  // trained second-layer weights.
  TwoLayerFlow WithLearningRates(double expert_lr, double router_lr, double weight_lr) const;
  // The same model with other per-unit student weights (pruning).
  TwoLayerFlow WithStudentWeights(const std::vector<double>& weights) const;
  std::vector<double> StudentWeights() const;  // one per student unit
  // The learning-rate multiplier of student vector a's block (student.lr or student.router_lr).
  double StudentMultiplier(int a) const;
  int students() const { return p_; }
  int teachers() const { return k_ + c_; }  // fixed vectors: teacher vectors and cluster means
  int teacher_vectors() const { return k_; }
  int cluster_means() const { return c_; }
  int vectors() const { return p_ + k_ + c_; }

  // The state holds the student rows of Ω: Q (upper triangle, row by row) then M (p x teachers()),
  // then, with trained weights, the per-unit student weights (this model's StudentWeights()).
  Eigen::VectorXd Pack(const Eigen::MatrixXd& gram) const;
  // The student weights a state holds (StudentWeights() unless they are trained).
  std::vector<double> WeightsIn(const Eigen::VectorXd& x) const;
  // This model with the weights of state x (itself unless they are trained and differ).
  TwoLayerFlow AtState(const Eigen::VectorXd& x) const;
  // ∂R/∂a_i = E[(f − y) φ_i] for every student unit (0 for a pruned unit): from the output
  // moments, or over the sampled backend's points.
  Eigen::VectorXd WeightGradient(const Eigen::MatrixXd& gram) const;
  // E[(Σ_i δ_i φ_i)²], φ_i = ∂f/∂a_i (unit i's output at weight 1), from the output moments (the
  // sampled backend: the second difference R(a + δ) + R(a − δ) − 2R(a) over its points, exact since
  // R is quadratic in the weights).
  double OutputSecondMoment(const std::vector<double>& delta, const Eigen::MatrixXd& gram) const;
  // The full vectors() x vectors() Gram matrix (fixed block: TeacherGram()).
  Eigen::MatrixXd Unpack(const Eigen::VectorXd& x) const;
  // The fixed vectors' overlaps (teachers() × teachers()): spec().teacher_gram or the identity for
  // the teacher vectors, the identity for the cluster means, clusters.teacher_overlaps between.
  const Eigen::MatrixXd& TeacherGram() const { return teacher_gram_; }
  // What is wrong with `t` as the teachers' overlaps (symmetric, unit diagonal, positive
  // definite), or "" if nothing.
  static std::string TeacherGramProblem(const Eigen::MatrixXd& t);

  double Risk(const Eigen::MatrixXd& gram) const;
  // G = ½ ∂R/∂Ω off the diagonal (Ω_ab and Ω_ba as one variable), on the Mehler path (unit
  // norms). With clusters the means μ_a = ρ Ω(a, v_c) are entries of Ω too, so G includes
  // G(a, v_c) = (ρ/2C) ∂R_c/∂μ_a and D = 2GΩ holds as without clusters.
  Eigen::MatrixXd RiskGradient(const Eigen::MatrixXd& gram) const;
  // D_ab = ∇_{u_a} R · u_b for the student rows a (the teacher rows are zero).
  Eigen::MatrixXd GradientOverlaps(const Eigen::MatrixXd& gram) const;
  // E[g_a g_b] for students a, b (the online-SGD term without its rate).
  Eigen::MatrixXd GradientCovariance(const Eigen::MatrixXd& gram) const;
  // dΩ/dt for the student rows, as a full symmetric matrix (teacher block zero).
  Eigen::MatrixXd GramDrift(const Eigen::MatrixXd& gram) const;
  // True if the population expectations are sums over points: sampled (TwoLayerSpec::sampled, or
  // top-k routing) or the quadrature backend's nodes (TwoLayerSpec::quadrature).
  bool PointBackend() const { return point_backend_; }
  bool Quadrature() const { return quadrature_; }
  // Why the quadrature backend cannot integrate `spec` exactly (a unit's own gate, a top-k
  // selection, a link that is not a polynomial), naming the key; "" if it can.
  static std::string QuadratureProblem(const TwoLayerSpec& spec);
  // The points of the population expectations at `gram`: projections h (N × vectors(), before the
  // cluster means) and weights w, E[F(h)] ≈ Σ_b w_b F(h_b).
  void PopulationPoints(const Eigen::MatrixXd& gram, Eigen::MatrixXd* h, const Eigen::VectorXd** w) const;
  // The sampled backend's estimates at `gram`: the risk and its standard error, D (p × n, as
  // GradientOverlaps) and, if asked, E[g_a g_b] (p × p, as GradientCovariance).
  // With `weights`, also ∂R/∂a_i = E[(f − y) ∂f/∂a_i] for every student unit (WeightGradient).
  struct SampledTerms {
    double risk = 0.0, risk_error = 0.0;
    Eigen::MatrixXd gradient_overlaps, gradient_covariance;
    Eigen::VectorXd weight_gradient;
  };
  SampledTerms SampleTerms(const Eigen::MatrixXd& gram, bool gradient, bool covariance, bool weights = false) const;
  // Cluster inputs and a top-k (or softmax) student router: for each cluster, the largest share of
  // its inputs whose top-1 router logit is one expert (the `routing` observable): exact (normal CDF
  // of the logit difference) for two experts, over the backend's points for more.
  bool HasRouting() const { return c_ > 0 && spec_.student.top_k > 0; }
  // The second-layer weights of the teacher units for inputs from cluster c (c = 0 without
  // clusters): what the sampled backend and the SGD labels use.
  std::vector<double> TeacherWeights(int c) const;
  Eigen::VectorXd RoutingAccuracy(const Eigen::MatrixXd& gram) const;

  int StateSize() const override;
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override;
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override { ObserveInto(x, nullptr, values); }
  // Skips, when not wanted, the observables that cost a pass over the backend's points or a
  // Gaussian expectation: the risk (written as 0 with risk_error) and, for more than two experts,
  // the routing accuracy (written as 0). The rest come from the Gram matrix and are always written.
  void ObserveSome(const Eigen::VectorXd& x, const std::vector<bool>& wanted, Eigen::VectorXd* values) const override {
    ObserveInto(x, &wanted, values);
  }
  std::string CheckInvariants(const Eigen::VectorXd& x) const override;
  // If the Gram matrix has an eigenvalue below −tolerance (integration error near a singular Gram
  // matrix, e.g. a student converged onto a teacher): the students' Schur complement given the
  // teachers and means with its negative eigenvalues set to 0 (the factor the point backends
  // already integrate over), then every student's row and column scaled back to its squared norm
  // (1 on the sphere). The teacher and mean block and the trained weights are left alone.
  double Project(Eigen::VectorXd* x, double tolerance) const override;

 private:
  // Observe (wanted = nullptr) or ObserveSome.
  void ObserveInto(const Eigen::VectorXd& x, const std::vector<bool>* wanted, Eigen::VectorXd* values) const;
  // GramDrift, and if `weight_gradient` is not null WeightGradient too (one pass over the points
  // when sampled).
  Eigen::MatrixXd GramDrift(const Eigen::MatrixXd& gram, Eigen::VectorXd* weight_gradient) const;
  // E_c[φ_u φ_v] for every pair of units (students, then teachers; φ_u the unit's output at
  // weight 1), one matrix per cluster pass (one without clusters); the exact backends only.
  // R = (1/C) Σ_c ½ s_cᵀ M_c s_c + σ²/2 with s_c = Signs(c): the risk, its weight gradient and
  // the output second moments all come from them.
  std::vector<Eigen::MatrixXd> OutputMoments(const Eigen::MatrixXd& gram) const;
  Eigen::VectorXd Signs(int c) const;  // Sign(u, c) for every unit
  // The Hermite series of every unit's link shifted by its mean mu[a] (ungated: unit a is vector
  // a), to one more than its Mehler order order[a] (the degree of a polynomial, else
  // kMehlerMaxOrder): the cluster-mean Mehler path of OutputMoments and ClusterMehlerGradient.
  std::vector<HermiteExpansion> ShiftedSeries(const Eigen::VectorXd& mu, std::vector<int>* order) const;
  // True if this model's student weights are those of state x (trained weights), bit for bit.
  bool HoldsWeightsOf(const Eigen::VectorXd& x) const;
  // The sign of unit u in f − y for inputs from cluster c (c = 0 without clusters).
  double Sign(int u, int c) const;
  // The means of every projection for inputs from cluster c (zero without clusters).
  Eigen::VectorXd Means(const Eigen::MatrixXd& gram, int c) const;
  int ClusterPasses() const { return std::max(1, c_); }
  // The Mehler path with cluster means: G (RiskGradient).
  Eigen::MatrixXd ClusterMehlerGradient(const Eigen::MatrixXd& gram) const;
  // L (vectors() × vectors(), row a the coordinates of vector a) with L Lᵀ = Ω₊ that maps the
  // sampled backend's points to projections, h = L z: StateFactor with the fixed vectors first.
  Eigen::MatrixXd PointFactor(const Eigen::MatrixXd& gram) const;
  // The quadrature backend's nodes, weights, gate and active rows (TwoLayerSpec::quadrature).
  void BuildQuadrature();

  // One unit: its sign in f − y, links and vector indices (router −1 if ungated).
  struct Unit {
    double sign;
    LinkPtr sigma, gate;
    int expert, router;
  };
  static GatedPairKernel::Correlations UnitCorrelations(const Unit& u, const Unit& v, const Eigen::MatrixXd& gram);
  const GatedPairKernel& GatedKernel(int u, int v) const;  // by unit indices
  Eigen::MatrixXd GatedGradientOverlaps(const Eigen::MatrixXd& gram) const;
  // The index of the pair of units (u, v)'s links in kernels_, pair_forms_, four_point_forms_.
  std::size_t LinkPair(int u, int v) const;
  const MehlerKernel& Kernel(int a, int b) const;
  bool UsesMehler() const { return spec_.constraint == VectorConstraint::kSpherical && !gated_; }
  double Multiplier(int a) const;  // Λ of student vector a (Λ/‖w‖² when normalised)

  TwoLayerSpec spec_;
  int p_, k_, c_;  // student vectors, teacher vectors, cluster means
  bool gated_;
  bool point_backend_, quadrature_;
  std::shared_ptr<const Eigen::MatrixXd> points_;  // sampled: N × n standard normals
  // quadrature (points_ unused): the nodes (N × (gate rows + active rows)) in the coordinates of an
  // orthonormal basis, chosen per state, whose first columns span the gate rows (differences of
  // router rows of L) and the next ones the active rows (the vectors of the polynomial links).
  std::shared_ptr<const Eigen::MatrixXd> nodes_;
  Eigen::VectorXd point_weights_;  // w_b: 1/N sampled, the rule's weights with quadrature
  std::vector<std::pair<int, int>> gate_rows_;
  std::vector<int> active_rows_;
  std::vector<Unit> units_;  // students first, then teachers (ungated: unit index = vector index)
  std::shared_ptr<const GatedPairKernel> gated_ss_, gated_st_, gated_tt_;
  // Mehler kernels for every pair of distinct links (by canonical spec: a student and a teacher
  // both he(3) share one): kernels_[LinkPair(a, b)].
  std::vector<LinkPtr> distinct_links_;
  std::vector<int> link_id_;  // per unit
  std::vector<MehlerKernel> kernels_;
  LinkPtr student_derivative_, identity_;
  // The engine's prepared forms (zero means: closed forms, compiled polynomial moments) of the
  // terms of OutputMoments, GradientOverlaps and GradientCovariance, found once per distinct link
  // (FindCentredForm): E[σ_a(h_a) σ_b(h_b)] by LinkPair(a, b), E[σ'(h_a) h_b σ_v(h_v)] by
  // link_id_[v], E[σ'(h_a) σ'(h_b) σ_v(h_v) σ_w(h_w)] by LinkPair(v, w), E[σ'(h_a) σ'(h_b)]
  // (label noise); empty where there is none.
  std::vector<CentredForm> pair_forms_, three_point_forms_, four_point_forms_;
  // The last two indices of those terms grouped by form, for CentredForm::AtPairs: (b, v) for every
  // vector b and unit v by three_point_forms_[link_id_[v]]; the units v ≤ w by
  // four_point_forms_[LinkPair(v, w)].
  struct PairGroup {
    std::size_t form;
    std::vector<std::pair<int, int>> pairs;
  };
  std::vector<PairGroup> three_point_pairs_, four_point_pairs_;
  CentredForm noise_form_;
  std::vector<ObservableInfo> observables_;
  int routing_observable_ = -1;  // the index of `routing` in observables_ (HasRouting())
  Eigen::MatrixXd teacher_gram_;
};

// Maximum Hermite order of the Mehler series for non-polynomial links.
inline constexpr int kMehlerMaxOrder = 60;

}  // namespace moeflow
