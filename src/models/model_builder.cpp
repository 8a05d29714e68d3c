#include "moeflow/models/model_builder.hpp"

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/models/two_layer.hpp"

namespace moeflow {
namespace {

std::string Num(double v) { return detail::FormatNumber(v); }

UnitBlock ReadUnits(const io::ModelFile& model, const std::string& block) {
  UnitBlock units;
  units.units = model.GetInt(block + ".units", 1, 1);
  if (model.Has(block + ".links")) {
    if (model.Has(block + ".link")) {
      throw InputError("keys '" + block + ".link' and '" + block + ".links' both give the links: give one of them");
    }
    units.links = model.GetLinkList(block + ".links");
    units.link = units.links.front();
  } else {
    units.link = model.GetLink(block + ".link", "h(3)");
  }
  units.weight = model.GetDouble(block + ".weight", 1.0);
  const std::string gate = model.GetString(block + ".gate", "none");
  if (gate != "none") units.gate = model.GetLink(block + ".gate", "none");
  units.top_k = model.GetInt(block + ".top_k", 0, 0);
  if (units.top_k > 0) {
    units.temperature = model.GetPositive(block + ".temperature", 1.0);
    units.softmax = model.GetChoice(block + ".router_weights", "softmax", {"softmax", "equal"}) == "softmax";
    units.selection_temperature = model.GetNonNegative(block + ".selection_temperature", 0.0);
    if (block == "student") units.neurons = model.GetInt(block + ".neurons", 1, 1);
  }
  return units;
}

// A rows × cols matrix listed row by row under `key`, or empty if the key is absent.
Eigen::MatrixXd ReadMatrix(const io::ModelFile& model, const std::string& key, int rows, int cols,
                           const std::string& what) {
  if (!model.Has(key)) return {};
  const std::vector<double> v = model.GetDoubleList(key, {});
  if (static_cast<int>(v.size()) != rows * cols) {
    ThrowBadValue(key, std::to_string(v.size()) + " numbers",
                  "must list the " + std::to_string(rows) + " x " + std::to_string(cols) + " " + what + " row by row");
  }
  Eigen::MatrixXd m(rows, cols);
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) m(i, j) = v[static_cast<std::size_t>(i * cols + j)];
  }
  return m;
}

// The [clusters] section (theory.md §3.4): Gaussian-mixture inputs x ~ N(ρ v_c, I) and the
// teacher's weights per cluster.
InputClusters ReadClusters(const io::ModelFile& model, const UnitBlock& teacher) {
  InputClusters clusters;
  clusters.count = model.GetInt("clusters.count", 0, 0);
  if (clusters.count == 0) return clusters;
  const int count = clusters.count;
  clusters.scale = model.GetNonNegative("clusters.scale", 1.0);
  const bool relax = model.GetBool("clusters.relax", false);
  const std::string relax_hint = "; set clusters.relax = true to study it on purpose";
  const bool signs = model.Has("clusters.global_signs"), weights = model.Has("clusters.teacher_weights");
  if (signs && weights) {
    throw InputError("keys 'clusters.global_signs' and 'clusters.teacher_weights' both give the teacher's weights per "
                     "cluster: give one of them");
  }
  if (signs) {
    // Kawata et al.: teacher units 1..C are the local tasks f*_c(w*_c·x), active in their own
    // cluster; unit C + 1 is the global task g*(w*_g·x), with sign s_c in cluster c.
    const std::vector<double> s = model.GetDoubleList("clusters.global_signs", {});
    if (static_cast<int>(s.size()) != count) {
      ThrowBadValue("clusters.global_signs", std::to_string(s.size()) + " numbers",
                    "must give one sign s_c per cluster (clusters.count = " + std::to_string(count) + ")");
    }
    if (teacher.units != count + 1) {
      ThrowBadValue("teacher.units", std::to_string(teacher.units),
                    "must be clusters.count + 1 = " + std::to_string(count + 1) +
                        " with clusters.global_signs (one local unit per cluster, then the global unit)");
    }
    double sum = 0.0;
    for (double v : s) sum += v;
    if (std::abs(sum) > 1e-12 && !relax) {
      ThrowBadValue("clusters.global_signs", model.GetString("clusters.global_signs"),
                    "must sum to 0 (sum " + Num(sum) + "): the global task cancels across clusters (theory.md §3.4)" +
                        relax_hint);
    }
    clusters.teacher_weights = Eigen::MatrixXd::Zero(count + 1, count);
    for (int c = 0; c < count; ++c) {
      clusters.teacher_weights(c, c) = 1.0;
      clusters.teacher_weights(count, c) = s[static_cast<std::size_t>(c)];
    }
  } else if (weights) {
    clusters.teacher_weights = ReadMatrix(model, "clusters.teacher_weights", teacher.units, count,
                                          "second-layer weights of the teacher units (rows) in each cluster (columns)");
  }
  if (clusters.teacher_weights.size() > 0) clusters.teacher_weights *= teacher.weight;
  const int k = teacher.Vectors();
  clusters.teacher_overlaps = ReadMatrix(model, "clusters.teacher_overlaps", count, k,
                                         "overlaps v_c·w* of the cluster means (rows) with the teacher vectors (columns)");
  if (clusters.teacher_overlaps.size() > 0 && clusters.teacher_overlaps.cwiseAbs().maxCoeff() > 0 && !relax) {
    ThrowBadValue("clusters.teacher_overlaps", model.GetString("clusters.teacher_overlaps"),
                  "must be zero: the cluster means are orthogonal to the teacher directions (theory.md §3.4)" +
                      relax_hint);
  }
  return clusters;
}

// teacher.overlap (every pair of distinct teacher expert vectors) or teacher.Q (all teacher
// vectors, row by row); empty: orthonormal.
Eigen::MatrixXd ReadTeacherGram(const io::ModelFile& model, const UnitBlock& teacher) {
  const int k = teacher.Vectors();
  const bool uniform = model.Has("teacher.overlap"), given = model.Has("teacher.Q");
  if (uniform && given) {
    throw InputError("keys 'teacher.overlap' and 'teacher.Q' both give the teachers' overlaps: give one of them");
  }
  if (uniform) {
    const double c = model.GetDouble("teacher.overlap");
    if (!(std::abs(c) < 1)) ThrowBadValue("teacher.overlap", Num(c), "must be in (-1, 1)");
    Eigen::MatrixXd t = Eigen::MatrixXd::Identity(k, k);
    for (int i = 0; i < teacher.units; ++i) {
      for (int j = 0; j < teacher.units; ++j) {
        if (i != j) t(i, j) = c;
      }
    }
    // Eigenvalues 1 − c and 1 + (units − 1)c.
    const double smallest = std::min(1 - c, 1 + (teacher.units - 1) * c);
    if (!(smallest > 1e-9)) {
      ThrowBadValue("teacher.overlap", Num(c), "must be > −1/(teacher.units − 1) = " + Num(-1.0 / (teacher.units - 1)) +
                                                   ": no " + std::to_string(teacher.units) +
                                                   " independent unit vectors have these overlaps");
    }
    return t;
  }
  if (!given) return {};
  const Eigen::MatrixXd t = ReadMatrix(model, "teacher.Q", k, k, "teacher overlaps (experts, then routers)");
  const std::string problem = TwoLayerFlow::TeacherGramProblem(t);
  if (!problem.empty()) ThrowBadValue("teacher.Q", model.GetString("teacher.Q"), problem);
  return t;
}

// The teacher block of a Gram matrix (students first) set to the teachers' overlaps.
Eigen::MatrixXd WithTeacherGram(Eigen::MatrixXd gram, const Eigen::MatrixXd& teacher_gram) {
  if (teacher_gram.size() > 0) gram.bottomRightCorner(teacher_gram.rows(), teacher_gram.cols()) = teacher_gram;
  return gram;
}

// Q = (1 - q0) I + q0 11ᵀ, every student-teacher overlap m0.
Eigen::MatrixXd UniformGram(int p, int k, double m0, double q0) {
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(p + k, p + k);
  for (int i = 0; i < p; ++i) {
    for (int j = 0; j < p; ++j) {
      if (i != j) gram(i, j) = q0;
    }
    for (int l = 0; l < k; ++l) gram(i, p + l) = gram(p + l, i) = m0;
  }
  return gram;
}

// Scales the student rows of a Gram matrix with unit student norms to norm ‖w_i‖ = `norm`.
Eigen::MatrixXd WithStudentNorm(Eigen::MatrixXd gram, int p, double norm) {
  gram.topRows(p) *= norm;
  gram.leftCols(p) *= norm;
  return gram;
}

// Replaces the vectors `moved` by their components orthogonal to span(`basis`), normalised, in
// the Gram matrix (pseudo-inverse of the basis Gram: a dependent basis is fine).
Eigen::MatrixXd ProjectOut(Eigen::MatrixXd gram, const std::vector<int>& moved, const std::vector<int>& basis) {
  const int n = static_cast<int>(gram.rows()), nb = static_cast<int>(basis.size());
  Eigen::MatrixXd gbb(nb, nb), gb(nb, n);
  for (int i = 0; i < nb; ++i) {
    for (int j = 0; j < nb; ++j) gbb(i, j) = gram(basis[i], basis[j]);
    gb.row(i) = gram.row(basis[i]);
  }
  const Eigen::MatrixXd coefficients = gbb.completeOrthogonalDecomposition().solve(gb);  // G_BB⁺ G_B·
  Eigen::MatrixXd projected = gram;
  for (int i : moved) {
    // x_i' = x_i − Σ_b c_bi x_b:  x_i'·x_k = G_ik − G_iB c_·k for every k, and
    // x_i'·x_j' = G_ij − G_iB c_·j for moved j (the projection is idempotent).
    for (int k = 0; k < n; ++k) projected(i, k) = gram(i, k) - gb.col(i).dot(coefficients.col(k));
    for (int k = 0; k < n; ++k) projected(k, i) = projected(i, k);
  }
  for (int i : moved) {
    for (int b : basis) projected(i, b) = projected(b, i) = 0.0;
  }
  for (int i : moved) {
    const double norm = std::sqrt(projected(i, i));
    if (!(norm > 1e-8)) {
      throw InputError("student.routers_orthogonal: a vector has no component orthogonal to the experts "
                       "(norm " + Num(norm) + "); raise d");
    }
    projected.row(i) /= norm;
    projected.col(i) /= norm;
  }
  return projected;
}

// Makes every router orthogonal to every expert (the manifold of theory.md §3.3): student experts
// first lose their components along the teacher routers, then student routers along all experts.
Eigen::MatrixXd RoutersOrthogonalToExperts(const Eigen::MatrixXd& gram, int m, int m_star) {
  std::vector<int> student_experts, student_routers, teacher_experts, teacher_routers;
  for (int i = 0; i < m; ++i) student_experts.push_back(i), student_routers.push_back(m + i);
  for (int l = 0; l < m_star; ++l) teacher_experts.push_back(2 * m + l), teacher_routers.push_back(2 * m + m_star + l);
  Eigen::MatrixXd g = ProjectOut(gram, student_experts, teacher_routers);
  std::vector<int> experts = student_experts;
  experts.insert(experts.end(), teacher_experts.begin(), teacher_experts.end());
  return ProjectOut(g, student_routers, experts);
}

// Unit i overlaps m0 with teacher unit i mod k (expert with expert, router with router); q0 between
// students' vectors of the same kind.
Eigen::MatrixXd InformedGram(const InitialOverlaps& init) {
  const int p = init.students, ps = init.student_units, kt = init.teacher_units;
  Eigen::MatrixXd gram = UniformGram(p, init.teachers, 0.0, 0.0);
  const bool gated = p == 2 * ps;
  for (int i = 0; i < p; ++i) {
    for (int j = 0; j < p; ++j) {
      if (i != j && (i < ps) == (j < ps)) gram(i, j) = init.q0;
    }
    const int unit = i % ps;
    const int teacher = (i < ps ? 0 : kt) + unit % kt;
    if (gated || i < ps) gram(i, p + teacher) = gram(p + teacher, i) = init.m0;
  }
  return gram;
}

InitialOverlaps ReadInitialOverlaps(const io::ModelFile& model, const TwoLayerFlow& flow, long long d) {
  const TwoLayerSpec& spec = flow.spec();
  InitialOverlaps init;
  init.students = flow.students();
  init.teachers = flow.teachers();
  init.student_units = spec.student.units;
  init.teacher_units = spec.teacher.units;
  init.d = d;
  init.teacher_gram = flow.TeacherGram();
  const int p = init.students, k = init.teachers;
  init.kind = model.GetChoice("student.init", "uniform", {"uniform", "random", "informed", "explicit"});
  init.norm = spec.constraint == VectorConstraint::kFree ? model.GetPositive("student.norm", 1.0) : 1.0;
  if (spec.student.HasRouters() && spec.teacher.HasRouters()) init.routers_orthogonal = model.GetBool("student.routers_orthogonal", false);
  // Keys of the other kinds of start (e.g. after --set student.init=random).
  for (const char* key : {"student.m0", "student.q0"}) {
    if (init.kind == "random" || init.kind == "explicit") {
      model.NotRead(key, "it applies to student.init = uniform or informed, and this model's is " + init.kind);
    }
  }
  for (const char* key : {"student.M", "student.Q"}) {
    if (init.kind != "explicit") {
      model.NotRead(key, "it applies to student.init = explicit, and this model's is " + init.kind);
    }
  }
  if (init.kind == "random") {
    if (d < p + k) {
      ThrowBadValue("d", std::to_string(d), "must be >= students + teachers = " + std::to_string(p + k) +
                                                " for student.init = random");
    }
    return init;
  }
  if (init.kind == "explicit") {
    const std::vector<double> m = model.GetDoubleList("student.M", {});
    if (static_cast<int>(m.size()) != p * k) {
      ThrowBadValue("student.M", std::to_string(m.size()) + " numbers",
                    "must list the " + std::to_string(p) + " x " + std::to_string(k) +
                        " student-teacher overlaps row by row (students: experts, then routers)");
    }
    std::vector<double> q = model.GetDoubleList("student.Q", {});
    if (q.empty()) {
      for (int i = 0; i < p; ++i) {
        for (int j = 0; j < p; ++j) q.push_back(i == j ? 1.0 : 0.0);
      }
    }
    if (static_cast<int>(q.size()) != p * p) {
      ThrowBadValue("student.Q", std::to_string(q.size()) + " numbers",
                    "must list the " + std::to_string(p) + " x " + std::to_string(p) + " student overlaps row by row");
    }
    Eigen::MatrixXd gram = WithTeacherGram(Eigen::MatrixXd::Identity(p + k, p + k), init.teacher_gram);
    for (int i = 0; i < p; ++i) {
      for (int l = 0; l < k; ++l) gram(i, p + l) = gram(p + l, i) = m[i * k + l];
      for (int j = 0; j < p; ++j) gram(i, j) = q[i * p + j];
    }
    if ((gram - gram.transpose()).cwiseAbs().maxCoeff() > 1e-12) {
      ThrowBadValue("student.Q", "", "must be symmetric");
    }
    if (spec.constraint != VectorConstraint::kFree && (gram.diagonal().head(p).array() - 1.0).abs().maxCoeff() > 1e-12) {
      ThrowBadValue("student.Q", "", "must have a unit diagonal: the student vectors are unit vectors (" +
                                         std::string(spec.constraint == VectorConstraint::kSpherical ? "spherical" : "normalised") + ")");
    }
    const double smallest =
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(gram, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
    if (smallest < -1e-12) {
      throw InputError("keys 'student.M' and 'student.Q' give an initial Gram matrix that is not positive "
                       "semi-definite (smallest eigenvalue " + Num(smallest) + "): no vectors have these overlaps");
    }
    init.explicit_gram = gram;
    init.norm = 1.0;  // the given Q holds the norms
    return init;
  }
  const std::string m0_text = model.GetString("student.m0", "auto");
  init.m0 = 1.0 / std::sqrt(static_cast<double>(d));
  if (m0_text != "auto") {
    const auto v = io::ParseNumber(m0_text);
    if (!v || std::abs(*v) > 1) ThrowBadValue("student.m0", m0_text, "must be 'auto' (d^(-1/2)) or a number in [-1, 1]");
    init.m0 = *v;
  }
  init.q0 = model.GetDouble("student.q0", 0.0);
  if (std::abs(init.q0) > 1) ThrowBadValue("student.q0", Num(init.q0), "must be in [-1, 1]");
  const Eigen::MatrixXd gram =
      WithTeacherGram(init.kind == "informed" ? InformedGram(init) : UniformGram(p, k, init.m0, init.q0), init.teacher_gram);
  const double smallest =
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(gram, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
  if (smallest < -1e-12) {
    throw InputError("keys 'student.m0' = " + Num(init.m0) + " and 'student.q0' = " + Num(init.q0) + " (student.init = " + init.kind + ") with " +
                     std::to_string(p) + " students and " + std::to_string(k) +
                     " teachers give an initial Gram matrix that is not positive semi-definite "
                     "(smallest eigenvalue " + Num(smallest) + "): no vectors have these overlaps");
  }
  return init;
}

// The [sgd] section: η as sgd.lr · d^(−sgd.lr_exponent); for an online-SGD model (whose ODE
// holds for η = η̃/d) the defaults are η = dynamics.lr / d and B = dynamics.batch.
SgdOptions ReadSgdOptions(const io::ModelFile& model, long long d, bool online_sgd_model) {
  SgdOptions o;
  o.d = d;
  const double dd = static_cast<double>(d);
  double default_lr = 0.0, default_exponent = 0.0;
  int default_batch = 1;
  if (online_sgd_model) {
    default_lr = model.GetPositive("dynamics.lr", 1.0);
    default_exponent = 1.0;
    default_batch = model.GetInt("dynamics.batch", 1, 1);
  }
  const double lr = model.Has("sgd.lr") ? model.GetPositive("sgd.lr", 1.0) : default_lr;
  const double exponent = model.GetDouble("sgd.lr_exponent", model.Has("sgd.lr") ? 0.0 : default_exponent);
  o.learning_rate = lr * std::pow(dd, -exponent);
  o.batch = model.GetInt("sgd.batch", default_batch, 1);
  o.samples = model.GetInteger("sgd.samples", 0, 0);
  o.test_samples = model.GetInteger("sgd.test_samples", 0, 0);
  const std::string engine = model.GetChoice("sgd.engine", "auto", {"auto", "vectors", "overlaps"});
  o.engine = engine == "vectors" ? SgdEngine::kVectors : (engine == "overlaps" ? SgdEngine::kOverlaps : SgdEngine::kAuto);
  o.event_resolution = model.GetPositive("sgd.event_resolution", o.event_resolution);
  o.max_steps = model.GetInteger("sgd.max_steps", o.max_steps, 1);
  if (o.samples > 0 && o.samples < o.batch) {
    ThrowBadValue("sgd.samples", std::to_string(o.samples), "must be >= sgd.batch = " + std::to_string(o.batch));
  }
  return o;
}

IntegratorOptions ReadIntegratorOptions(const io::ModelFile& model) {
  IntegratorOptions o;
  const std::string stepper = model.GetString("integrate.stepper", ToString(o.stepper));
  if (!FromString(stepper, &o.stepper)) {
    ThrowBadValue("integrate.stepper", stepper,
                  "is not a known stepper" + detail::DidYouMean(stepper, StepperNames()) + " (known: " +
                      detail::Join(StepperNames(), ", ") + ")");
  }
  o.abs_tol = model.GetNonNegative("integrate.abs_tol", o.abs_tol);
  o.rel_tol = model.GetNonNegative("integrate.rel_tol", o.rel_tol);
  o.t_end = model.GetPositive("integrate.t_end", o.t_end);
  o.dt_initial = model.GetPositive("integrate.dt_initial", o.dt_initial);
  o.dt_min = model.GetPositive("integrate.dt_min", o.dt_min);
  o.max_steps = model.GetInteger("integrate.max_steps", o.max_steps, 1);
  o.divergence_threshold = model.GetPositive("integrate.divergence", o.divergence_threshold);
  const std::string grid = model.GetChoice("output.grid", "log", {"log", "linear"});
  // At most 10^7 rows: a finer grid is more than a plot or a fit can use, and its times alone
  // take 80 MB (output.every_step records every accepted step instead).
  const int points = model.GetInt("output.points", 200, 1, 10'000'000);
  const double t_first = model.GetPositive("output.t_first", 1e-3);  // used by the log grid
  o.output_times = MakeTimeGrid(grid, points, t_first, o.t_end);
  o.output_every_step = model.GetBool("output.every_step", false);
  o.project = model.GetBool("integrate.project", o.project);
  o.Validate();
  return o;
}

std::vector<EventSpec> ReadEvents(const io::ModelFile& model) {
  std::vector<EventSpec> events;
  for (const std::string& name : model.SubsectionNames("event")) {
    const std::string prefix = "event." + name + ".";
    EventSpec e;
    e.name = name;
    e.observable = model.GetString(prefix + "observable");
    const std::string op = model.GetString(prefix + "op", ">=");
    if (!FromString(op, &e.comparison)) ThrowBadValue(prefix + "op", op, "is not one of: >=, >, <=, <");
    e.threshold = model.GetDouble(prefix + "threshold");
    if (model.GetBool(prefix + "relative", false)) {
      e.relative = e.threshold;  // a multiple of the observable's value at t = 0, fixed when a run starts
      e.threshold = std::numeric_limits<double>::quiet_NaN();
    }
    e.stop = model.GetBool(prefix + "stop", false);
    events.push_back(e);
  }
  return events;
}

// An event on `name[*]` stands for one event per element of a vector observable: `event[i]`.
std::vector<EventSpec> ExpandEvents(const std::vector<EventSpec>& events, const std::vector<ObservableInfo>& observables) {
  std::vector<EventSpec> out;
  for (const EventSpec& e : events) {
    const std::size_t star = e.observable.find("[*]");
    if (star == std::string::npos) {
      out.push_back(e);
      continue;
    }
    const std::string name = detail::Trim(e.observable.substr(0, star));
    int rows = -1;
    for (const ObservableInfo& o : observables) {
      if (o.name == name && o.cols == 1) rows = o.rows;
    }
    if (rows < 0) {
      ThrowBadValue("event." + e.name + ".observable", e.observable,
                    "uses [*], which needs the name of a vector observable of this model");
    }
    for (int i = 0; i < rows; ++i) {
      EventSpec one = e;
      one.name = e.name + "_" + std::to_string(i);
      one.observable = name + "[" + std::to_string(i) + "]";
      out.push_back(one);
    }
  }
  return out;
}

// An event name, or NAME[*] for every expanded NAME_i.
std::vector<std::string> EventNames(const std::string& key, const std::string& name, const std::vector<EventSpec>& events) {
  std::vector<std::string> names, known;
  for (const EventSpec& e : events) known.push_back(e.name);
  const std::size_t star = name.find("[*]");
  if (star == std::string::npos) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      ThrowBadValue(key, name, "must name an event of the model" + detail::DidYouMean(name, known) + " (known: " +
                                   detail::Join(known, ", ") + ")");
    }
    return {name};
  }
  const std::string base = name.substr(0, star) + "_";
  for (int i = 0;; ++i) {
    const std::string n = base + std::to_string(i);
    if (std::find(known.begin(), known.end(), n) == known.end()) break;
    names.push_back(n);
  }
  if (names.empty()) ThrowBadValue(key, name, "uses [*] but the model has no events " + base + "0, " + base + "1, ...");
  return names;
}

// [stage.NAME] sections in file order; none: one stage with the student's multipliers.
std::vector<Stage> ReadStages(const io::ModelFile& model, const TwoLayerSpec& spec, const std::vector<EventSpec>& events) {
  std::vector<Stage> stages;
  for (const std::string& name : model.SubsectionNames("stage")) {
    const std::string prefix = "stage." + name + ".";
    Stage stage;
    stage.name = name;
    if (model.Has(prefix + "duration")) stage.duration = model.GetPositive(prefix + "duration", 1.0);
    stage.until = model.GetString(prefix + "until", "");
    if (!stage.until.empty() && EventNames(prefix + "until", stage.until, events).size() != 1) {
      ThrowBadValue(prefix + "until", stage.until, "must name one event (not NAME[*])");
    }

    stage.learning_rate = model.GetNonNegative(prefix + "lr", spec.learning_rate);
    stage.prune = model.GetChoice(prefix + "prune", "none",
                                  {"none", "cancelling", "duplicates", "redundant", "negligible", "merge", "all"});
    if (stage.prune == "merge" && !MergeApplies(spec)) {
      ThrowBadValue(prefix + "prune", stage.prune,
                    "needs units with their own gates (student.gate, no top-k router) and unit vectors "
                    "(student.vectors = spherical or normalised)");
    }
    if (stage.prune != "none" && spec.student.neurons > 1) {
      ThrowBadValue(prefix + "prune", stage.prune, "is for experts of one neuron (student.neurons = 1)");
    }
    if (stage.prune != "none") {
      stage.prune_tolerance = model.GetPositive(prefix + "prune_tolerance", stage.prune_tolerance);
      if (stage.prune_tolerance >= 1) ThrowBadValue(prefix + "prune_tolerance", Num(stage.prune_tolerance), "must be < 1");
      stage.prune_rms = model.GetPositive(prefix + "prune_rms", stage.prune_rms);
    }
    stage.router_learning_rate =
        spec.student.HasRouters() ? model.GetNonNegative(prefix + "router_lr", spec.router_learning_rate) : 1.0;
    if (model.Has(prefix + "weights_lr") && !spec.trained_weights) {
      ThrowBadValue(prefix + "weights_lr", model.GetString(prefix + "weights_lr", ""),
                    "needs trained second-layer weights: give student.weights_lr (0 freezes them until a stage "
                    "sets its own)");
    }
    stage.weight_learning_rate = model.GetNonNegative(prefix + "weights_lr", spec.weight_learning_rate);
    stages.push_back(stage);
  }
  for (std::size_t s = 0; s + 1 < stages.size(); ++s) {
    if (std::isinf(stages[s].duration) && stages[s].until.empty()) {
      throw InputError("stage '" + stages[s].name + "' has no stop rule: give stage." + stages[s].name +
                       ".duration, stage." + stages[s].name + ".until (an event), or both (only the last stage "
                       "may run on to integrate.t_end)");
    }
  }
  if (stages.empty()) stages.push_back(WholeRunStage(spec));
  return stages;
}

// `set = KEY=VALUE, ...`: the model of a check's own runs differs from the file's by these; each
// must be an assignment of a key the model knows (checked on a copy now).
std::vector<std::string> ReadCheckOverrides(const io::ModelFile& model, const std::string& key) {
  const std::vector<std::string> overrides = model.GetStringList(key, {});
  io::ModelFile copy = model;
  for (const std::string& o : overrides) {
    if (o.find('=') == std::string::npos) ThrowBadValue(key, o, "must be a list of KEY=VALUE assignments");
    try {
      copy.Set(o);
    } catch (const InputError& e) {
      ThrowBadValue(key, o, std::string("is not a valid assignment: ") + e.what());
    }
  }
  return overrides;
}

std::vector<CheckSpec> ReadChecks(const io::ModelFile& model, const std::vector<EventSpec>& events,
                                  const std::vector<ObservableInfo>& observables) {
  std::vector<CheckSpec> checks;
  for (const std::string& name : model.SubsectionNames("check")) {
    const std::string prefix = "check." + name + ".";
    CheckSpec c;
    c.name = name;
    c.description = model.GetString(prefix + "claim", "");
    const std::string kind =
        model.GetChoice(prefix + "kind", "order", {"order", "before", "scaling", "bound", "final", "argmin"});
    if (kind == "order") {
      c.kind = CheckKind::kOrder;
      for (const std::string& e : model.GetStringList(prefix + "events", {})) {
        for (const std::string& n : EventNames(prefix + "events", e, events)) c.events.push_back(n);
      }
      if (c.events.size() < 2) {
        ThrowBadValue(prefix + "events", model.GetString(prefix + "events", ""), "must list at least two events");
      }
    } else if (kind == "before") {
      c.kind = CheckKind::kBefore;
      const auto first = EventNames(prefix + "first", model.GetString(prefix + "first"), events);
      const auto second = EventNames(prefix + "second", model.GetString(prefix + "second"), events);
      if (first.size() != second.size()) {
        throw InputError("keys '" + prefix + "first' and '" + prefix + "second' expand to " +
                         std::to_string(first.size()) + " and " + std::to_string(second.size()) +
                         " events: they must pair up");
      }
      for (std::size_t i = 0; i < first.size(); ++i) c.events.push_back(first[i]), c.events.push_back(second[i]);
    } else if (kind == "scaling") {
      c.kind = CheckKind::kScaling;
      c.events = EventNames(prefix + "event", model.GetString(prefix + "event"), events);
      if (c.events.size() != 1) ThrowBadValue(prefix + "event", c.events.front(), "must name one event");
      c.exponent = model.GetDouble(prefix + "exponent");
      c.tolerance = model.GetPositive(prefix + "tolerance", 0.05);
      c.dimensions = model.GetDoubleList(prefix + "dimensions", {});
      if (c.dimensions.size() < 2) {
        ThrowBadValue(prefix + "dimensions", model.GetString(prefix + "dimensions", ""),
                      "must list at least two dimensions");
      }
      for (double d : c.dimensions) {
        if (!(d >= 1) || d != std::floor(d)) ThrowBadValue(prefix + "dimensions", Num(d), "must hold integers >= 1");
      }
      c.sgd = model.GetBool(prefix + "sgd", false);
      if (c.sgd) c.seeds = model.GetInt(prefix + "seeds", 8, 1);
    } else if (kind == "argmin") {
      c.kind = CheckKind::kArgmin;
      c.observable = model.GetString(prefix + "observable", "risk");
      ObservableSelector(c.observable, observables, prefix + "observable");
      c.key = model.GetString(prefix + "key");
      c.values = model.GetStringList(prefix + "values", {});
      c.across = model.GetString(prefix + "across");
      c.across_values = model.GetStringList(prefix + "across_values", {});
      c.interior = model.GetStringList(prefix + "interior", {});
      if (c.values.size() < 3) {
        ThrowBadValue(prefix + "values", detail::Join(c.values, ", "), "must list at least three values of " + c.key);
      }
      if (c.across_values.empty()) {
        ThrowBadValue(prefix + "across_values", model.GetString(prefix + "across_values", ""),
                      "must list the values of " + c.across);
      }
      if (c.key == c.across) ThrowBadValue(prefix + "across", c.across, "must differ from " + prefix + "key");
      for (const std::string& a : c.interior) {
        if (std::find(c.across_values.begin(), c.across_values.end(), a) == c.across_values.end()) {
          ThrowBadValue(prefix + "interior", a, "must be one of " + prefix + "across_values");
        }
      }
      c.sgd = model.GetBool(prefix + "sgd", false);
      if (c.sgd) c.seeds = model.GetInt(prefix + "seeds", 4, 1);
    } else {
      c.kind = kind == "bound" ? CheckKind::kBound : CheckKind::kFinal;
      c.observable = model.GetString(prefix + "observable");
      ObservableSelector(c.observable, observables, prefix + "observable");
      if (c.kind == CheckKind::kBound) {
        c.constant = model.GetPositive(prefix + "constant", 1.0);
        c.power = model.GetDouble(prefix + "power", 0.0);
        const std::string until = model.GetString(prefix + "until");
        if (const auto t = io::ParseNumber(until)) {
          if (!(*t > 0)) ThrowBadValue(prefix + "until", until, "must be a time > 0 or the name of an event");
          c.until = *t;
        } else if (EventNames(prefix + "until", until, events).size() == 1) {
          c.until_event = until;
        } else {
          ThrowBadValue(prefix + "until", until, "must name one event (not NAME[*]) or be a time");
        }
      } else {
        const std::string op = model.GetString(prefix + "op", "<=");
        if (!FromString(op, &c.comparison)) ThrowBadValue(prefix + "op", op, "is not one of: >=, >, <=, <");
        c.threshold = model.GetDouble(prefix + "threshold");
      }
    }
    if (c.kind != CheckKind::kScaling && c.kind != CheckKind::kArgmin) {
      c.seeds = model.GetInt(prefix + "seeds", 1, 1);
      c.at_least = model.GetDouble(prefix + "at_least", 1.0);
      if (!(c.at_least > 0 && c.at_least <= 1)) {
        ThrowBadValue(prefix + "at_least", detail::FormatNumber(c.at_least), "must be a fraction in (0, 1]");
      }
    }
    c.overrides = ReadCheckOverrides(model, prefix + "set");
    checks.push_back(c);
  }
  return checks;
}

}  // namespace

Eigen::MatrixXd SampleInitialGram(int p, int k, long long d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Eigen::MatrixXd along(p, k);  // coordinates on the teacher directions
  for (int i = 0; i < p; ++i) {
    for (int l = 0; l < k; ++l) along(i, l) = normal(rng) * scale;
  }
  Eigen::MatrixXd bartlett = Eigen::MatrixXd::Zero(p, p);  // A with A Aᵀ ~ Wishart(d - k, I)
  for (int i = 0; i < p; ++i) {
    std::chi_squared_distribution<double> chi2(static_cast<double>(d - k - i));
    bartlett(i, i) = std::sqrt(chi2(rng));
    for (int j = 0; j < i; ++j) bartlett(i, j) = normal(rng);
  }
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(p + k, p + k);
  gram.topLeftCorner(p, p) = along * along.transpose() + bartlett * bartlett.transpose() * (scale * scale);
  gram.topRightCorner(p, k) = along;
  gram.bottomLeftCorner(k, p) = along.transpose();
  const Eigen::VectorXd norms = gram.diagonal().head(p).cwiseSqrt();
  for (int i = 0; i < p; ++i) {
    gram.row(i) /= norms[i];
    gram.col(i) /= norms[i];
  }
  return gram;
}

Eigen::MatrixXd MakeInitialGram(const InitialOverlaps& init, std::uint64_t seed) {
  const int p = init.students, k = init.teachers;
  if (init.kind == "explicit") return init.explicit_gram;
  Eigen::MatrixXd gram = init.kind == "random"     ? SampleInitialGram(p, k, init.d, seed)
                         : init.kind == "informed" ? InformedGram(init)
                                                   : UniformGram(p, k, init.m0, init.q0);
  if (init.kind == "random" && init.teacher_gram.size() > 0) {
    // The sampled student-teacher block holds coordinates on an orthonormal basis of the span.
    const Eigen::MatrixXd c = init.teacher_gram.llt().matrixL();
    const Eigen::MatrixXd m = gram.topRightCorner(p, k) * c.transpose();
    gram.topRightCorner(p, k) = m;
    gram.bottomLeftCorner(k, p) = m.transpose();
  }
  gram = WithTeacherGram(gram, init.teacher_gram);
  if (init.routers_orthogonal) gram = RoutersOrthogonalToExperts(gram, init.student_units, init.teacher_units);
  return WithStudentNorm(gram, p, init.norm);
}

void ValidateSgd(const FlowSetup& setup) { setup.sgd.Validate(setup.system->vectors()); }

std::vector<SgdRun> SimulateModelSgd(const FlowSetup& setup, int seeds, int threads, const SgdControl& control) {
  ValidateSgd(setup);
  std::vector<std::uint64_t> list;
  for (int i = 0; i < seeds; ++i) list.push_back(setup.seed + static_cast<std::uint64_t>(i));
  return SimulateSgdSeeds(
      *setup.system, [&setup](std::uint64_t seed) { return MakeInitialGram(setup.init, seed); }, setup.sgd,
      setup.options, setup.events, list, threads, control);
}

FlowSetup BuildFlow(const io::ModelFile& model) {
  FlowSetup setup;
  setup.d = model.GetInteger("d", 1);
  setup.seed = static_cast<std::uint64_t>(model.GetInteger("seed", 1, 0));
  TwoLayerSpec spec;
  spec.teacher = ReadUnits(model, "teacher");
  spec.noise_variance = model.GetNonNegative("teacher.noise", 0.0);
  spec.teacher_gram = ReadTeacherGram(model, spec.teacher);
  spec.clusters = ReadClusters(model, spec.teacher);
  spec.student = ReadUnits(model, "student");
  const std::string vectors = model.GetChoice("student.vectors", "spherical", {"spherical", "free", "normalised"});
  spec.constraint = vectors == "free" ? VectorConstraint::kFree
                                 : (vectors == "normalised" ? VectorConstraint::kNormalised : VectorConstraint::kSpherical);
  spec.learning_rate = model.GetNonNegative("student.lr", 1.0);
  if (spec.student.HasRouters()) spec.router_learning_rate = model.GetNonNegative("student.router_lr", 1.0);
  spec.trained_weights = model.Has("student.weights_lr");
  if (spec.trained_weights) spec.weight_learning_rate = model.GetNonNegative("student.weights_lr", 1.0);
  if (spec.constraint == VectorConstraint::kNormalised) {
    spec.expert_norm = model.GetPositive("student.expert_norm", 1.0);
    if (spec.student.HasRouters()) spec.router_norm = model.GetPositive("student.router_norm", 1.0);
  }
  const bool routed = spec.student.top_k > 0 || spec.teacher.top_k > 0;
  const std::string backend =
      model.GetChoice("population.backend", "auto", {"auto", "exact", "sampled", "quadrature"});
  if (backend == "exact" && routed) {
    ThrowBadValue("population.backend", backend, "cannot be exact with a top-k router (it couples all units): use "
                                                 "auto, quadrature (softmax routers, polynomial links) or sampled");
  }
  // auto: the quadrature backend where it is exact and affordable (gradient flow, polynomial links,
  // softmax routers over all experts), else sampled for top-k routers, else exact.
  const bool online = model.GetChoice("dynamics.kind", "gradient_flow", {"gradient_flow", "online_sgd"}) == "online_sgd";
  const bool quadrature_fits = routed && !online && TwoLayerFlow::QuadratureProblem(spec).empty();
  spec.quadrature = backend == "quadrature" || (backend == "auto" && quadrature_fits);
  spec.sampled = backend == "sampled" || (routed && !spec.quadrature);
  if (spec.quadrature) {
    spec.gate_nodes = model.Has("population.gate_nodes")
                          ? model.GetInt("population.gate_nodes", 3, 3)
                          : 0;  // automatic: from the router temperature
  } else if (spec.sampled) {
    spec.population_samples = model.GetInt("population.samples", spec.population_samples, 2);
    spec.population_seed =
        static_cast<std::uint64_t>(model.GetInteger("population.seed", static_cast<long long>(spec.population_seed), 0));
  }
  // Keys of a backend or dynamics this run does not use (e.g. after --set population.backend=...).
  const std::string chosen = spec.quadrature ? "quadrature" : spec.sampled ? "sampled" : "exact";
  if (!spec.quadrature) {
    model.NotRead("population.gate_nodes", "it applies to population.backend = quadrature, and this run uses " + chosen);
  }
  if (!spec.sampled) {
    for (const char* key : {"population.samples", "population.seed"}) {
      model.NotRead(key, "it applies to population.backend = sampled, and this run uses " + chosen);
    }
  }
  if (online) {
    // Online SGD with η = η̃/d and batch B, in the time t = η·steps, as d → ∞ (theory.md §1).
    spec.online_sgd_rate = model.GetPositive("dynamics.lr", 1.0) /
                           static_cast<double>(model.GetInt("dynamics.batch", 1, 1));
  } else {
    for (const char* key : {"dynamics.lr", "dynamics.batch"}) {
      model.NotRead(key, "it applies to dynamics.kind = online_sgd, and this run is gradient_flow");
    }
  }
  spec.psd_tolerance = model.GetPositive("integrate.psd_tolerance", spec.psd_tolerance);
  auto flow = std::make_unique<TwoLayerFlow>(spec);
  setup.init = ReadInitialOverlaps(model, *flow, setup.d);
  setup.initial_gram = MakeInitialGram(setup.init, setup.seed);
  setup.initial_state = flow->Pack(setup.initial_gram);
  setup.sgd = ReadSgdOptions(model, setup.d, spec.online_sgd_rate != 0.0);
  setup.system = std::move(flow);
  setup.options = ReadIntegratorOptions(model);
  setup.events = ExpandEvents(ReadEvents(model), setup.system->Observables());
  // Resolve every event's observable now, so a bad one fails before anything runs; a relative
  // threshold needs a start where its observable is not 0 (checked on this seed's start).
  Eigen::VectorXd initial(ObservableValueCount(setup.system->Observables()));
  setup.system->Observe(setup.initial_state, &initial);
  for (const EventSpec& e : setup.events) {
    const ObservableSelector selector(e.observable, setup.system->Observables(), "event." + e.name + ".observable");
    const double v0 = selector.Evaluate(initial);
    if (e.IsRelative() && !(std::isfinite(v0) && v0 != 0.0)) {
      ThrowBadValue("event." + e.name + ".relative", "true",
                    "needs an observable that is finite and not 0 at t = 0, and " + e.observable + " = " + Num(v0) +
                        " there (seed " + std::to_string(setup.seed) + "): give an absolute threshold");
    }
  }
  setup.stages = ReadStages(model, spec, setup.events);
  setup.checks = ReadChecks(model, setup.events, setup.system->Observables());
  setup.sgd.stages = setup.stages;
  model.CheckAllKeysUsed();
  return setup;
}

}  // namespace moeflow
