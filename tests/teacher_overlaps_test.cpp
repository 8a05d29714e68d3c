// Teachers with given overlaps (teacher.overlap, teacher.Q) instead of orthonormal ones, against
// independent references:
//   - a student equal to the teachers has risk exactly 0 and no gradient (exact backend; a drift
//     that took the teachers as orthonormal would not vanish there);
//   - the exact backend (closed-form erf expectations) against the sampled one (fixed Gaussian
//     points over the whole Gram matrix, teachers included): risk within 5 standard errors, every
//     gradient overlap within 5 standard errors estimated from 8 independent point sets;
//   - random initial overlaps: over 4000 seeds the student-teacher overlaps have covariance T/d
//     (each entry within 5 standard errors), as for w uniform on the sphere;
//   - the SGD vectors realise the Gram matrix (teachers included) to 1e-12;
//   - impossible overlaps are rejected by key.
#include <gtest/gtest.h>

#include <cmath>

#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

FlowSetup Committee(const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("committee_erf_k2m2.ini"));
  model.Set("teacher.units=3");
  model.Set("student.units=3");
  for (const std::string& o : overrides) model.Set(o);
  return BuildFlow(model);
}

TEST(TeacherOverlaps, AStudentEqualToTheTeachersHasZeroRiskAndNoGradient) {
  const FlowSetup setup = Committee({"teacher.Q=1, 0.3, -0.2, 0.3, 1, 0.5, -0.2, 0.5, 1", "student.init=explicit",
                                    "student.M=1, 0.3, -0.2, 0.3, 1, 0.5, -0.2, 0.5, 1",
                                    "student.Q=1, 0.3, -0.2, 0.3, 1, 0.5, -0.2, 0.5, 1"});
  const TwoLayerFlow& flow = *setup.system;
  const Eigen::MatrixXd gram = flow.Unpack(setup.initial_state);
  EXPECT_EQ(gram(4, 5), 0.5);  // teacher block as given
  EXPECT_NEAR(flow.Risk(gram), 0.0, 1e-14);
  EXPECT_LT(flow.GradientOverlaps(gram).cwiseAbs().maxCoeff(), 1e-13);
  // These overlaps are impossible with orthonormal teachers (the student would equal them).
  EXPECT_THROW(Committee({"student.init=explicit", "student.M=1, 0.3, -0.2, 0.3, 1, 0.5, -0.2, 0.5, 1",
                          "student.Q=1, 0.3, -0.2, 0.3, 1, 0.5, -0.2, 0.5, 1"}),
               InputError);
}

TEST(TeacherOverlaps, ExactAndSampledBackendsAgree) {
  const std::vector<std::string> common = {"teacher.overlap=0.4", "d=20", "seed=5"};
  const FlowSetup exact = Committee(common);
  const Eigen::MatrixXd gram = exact.system->Unpack(exact.initial_state);
  ASSERT_NEAR(gram(3, 4), 0.4, 1e-15);
  const double risk = exact.system->Risk(gram);
  const int p = exact.system->students();
  const Eigen::MatrixXd d = exact.system->GradientOverlaps(gram).topRows(p);  // the sampled D is p × n
  std::vector<Eigen::MatrixXd> estimates;
  for (int s = 0; s < 8; ++s) {
    std::vector<std::string> o = common;
    o.push_back("population.backend=sampled");
    o.push_back("population.samples=16384");
    o.push_back("population.seed=" + std::to_string(100 + s));
    const FlowSetup sampled = Committee(o);
    const TwoLayerFlow::SampledTerms t = sampled.system->SampleTerms(gram, true, false);
    EXPECT_LE(std::abs(t.risk - risk), 5 * t.risk_error) << "point set " << s << ": " << t.risk << " vs " << risk;
    estimates.push_back(t.gradient_overlaps);
  }
  Eigen::MatrixXd mean = Eigen::MatrixXd::Zero(d.rows(), d.cols()), square = mean;
  for (const Eigen::MatrixXd& e : estimates) mean += e / 8.0, square += e.cwiseProduct(e) / 8.0;
  const Eigen::MatrixXd se = ((square - mean.cwiseProduct(mean)) * (8.0 / 7.0 / 8.0)).cwiseSqrt();
  for (Eigen::Index i = 0; i < d.rows(); ++i) {
    for (Eigen::Index j = 0; j < d.cols(); ++j) {
      EXPECT_LE(std::abs(mean(i, j) - d(i, j)), 5 * se(i, j) + 1e-12) << "D(" << i << ", " << j << ")";
    }
  }
}

TEST(TeacherOverlaps, RandomInitialOverlapsHaveCovarianceTOverD) {
  InitialOverlaps init;
  init.kind = "random";
  init.students = 1;
  init.teachers = 3;
  init.student_units = 1;
  init.teacher_units = 3;
  init.d = 100;
  init.teacher_gram.resize(3, 3);
  init.teacher_gram << 1, 0.6, -0.3, 0.6, 1, 0.2, -0.3, 0.2, 1;
  const int seeds = 4000;
  Eigen::Matrix3d sum = Eigen::Matrix3d::Zero(), sum4 = Eigen::Matrix3d::Zero();
  for (int s = 0; s < seeds; ++s) {
    const Eigen::MatrixXd gram = MakeInitialGram(init, static_cast<std::uint64_t>(s + 1));
    ASSERT_LT((gram.bottomRightCorner(3, 3) - init.teacher_gram).cwiseAbs().maxCoeff(), 1e-15);
    const Eigen::Vector3d m = gram.block(0, 1, 1, 3).transpose();
    const Eigen::Matrix3d outer = m * m.transpose();
    sum += outer;
    sum4 += outer.cwiseProduct(outer);
  }
  const Eigen::Matrix3d mean = sum / seeds;
  const Eigen::Matrix3d se = ((sum4 / seeds - mean.cwiseProduct(mean)) / (seeds - 1)).cwiseSqrt();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      EXPECT_LE(std::abs(mean(i, j) * 100 - init.teacher_gram(i, j)), 5 * se(i, j) * 100)
          << "(" << i << ", " << j << "): d E[m_i m_j] = " << mean(i, j) * 100;
    }
  }
}

TEST(TeacherOverlaps, SgdVectorsRealiseTheGramMatrix) {
  const FlowSetup setup = Committee({"teacher.overlap=-0.3", "d=50", "seed=2"});
  const Eigen::MatrixXd u = VectorsFromGram(setup.initial_gram, setup.system->students(), 50);
  EXPECT_LT((u * u.transpose() - setup.initial_gram).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(TeacherOverlaps, ImpossibleOverlapsAreRejectedByKey) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
  };
  for (const Case& c : std::vector<Case>{{{"teacher.overlap=-0.6"}, "teacher.overlap"},  // 3 teachers: > −1/2
                                         {{"teacher.overlap=1"}, "teacher.overlap"},
                                         {{"teacher.Q=1, 0, 0, 0, 1, 0, 0, 0"}, "teacher.Q"},
                                         {{"teacher.Q=1, 0.2, 0, 0, 1, 0, 0, 0, 1"}, "teacher.Q"},      // not symmetric
                                         {{"teacher.Q=1, 0.9, 0.9, 0.9, 1, -0.9, 0.9, -0.9, 1"}, "teacher.Q"},  // not PD
                                         {{"teacher.Q=1, 0, 0, 0, 1, 0, 0, 0, 1", "teacher.overlap=0.1"}, "teacher.overlap"}}) {
    try {
      Committee(c.overrides);
      ADD_FAILURE() << "accepted " << c.overrides.front();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.key), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moeflow
