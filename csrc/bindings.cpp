// The pybind11 module pyssl._C: tensor views in, kernels out. No libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "augment/augment.h"
#include "colour/colour.h"
#include "contrastive/contrastive.h"
#include "masking/masking.h"
#include "pretext/pretext.h"
#include "pyssl/common.h"
#include "pyssl/parallel.h"
#include "text/text.h"
#include "word2vec/word2vec.h"

#ifndef PYSSL_VERSION
#define PYSSL_VERSION "unknown"
#endif
#ifndef PYSSL_CUDA_ARCHS
#define PYSSL_CUDA_ARCHS ""
#endif

namespace py = pybind11;
using pyssl::DType;
using pyssl::View;

namespace {

// Converts between floating dtypes with the core's own rounding (tested against torch's).
void convert(const View& src, const View& dst) {
  pyssl::check(src.numel() == dst.numel() && src.contiguous() && dst.contiguous(),
               "convert: expected contiguous views of equal size");
  const int64_t n = src.numel();
  pyssl::dispatch_float(src.dtype, [&](auto s) {
    using S = decltype(s);
    pyssl::dispatch_float(dst.dtype, [&](auto d) {
      using Dt = decltype(d);
      const S* a = src.data<S>();
      Dt* b = dst.data<Dt>();
      pyssl::parallel_chunks(n, 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) pyssl::store(b + i, pyssl::load(a + i));
      });
    });
  });
}

#ifndef PYSSL_WITH_CUDA
// Without CUDA the cuda:: entry points exist but refuse politely.
[[noreturn]] void no_cuda() {
  throw std::runtime_error("pyssl was built without CUDA; rebuild with -DPYSSL_CUDA=ON");
}
#endif

}  // namespace

#ifndef PYSSL_WITH_CUDA
namespace pyssl::masking::cuda {
void gather_patches(const View&, const View&, int64_t, const View&, uintptr_t) { no_cuda(); }
void scatter_patches(const View&, const View&, int64_t, const View&, uintptr_t) { no_cuda(); }
void random_masking(const View&, const View&, int64_t, const View&, const View&, const View&,
                    const View&, uintptr_t) {
  no_cuda();
}
void restore_masked(const View&, const View&, const View&, const View&, uintptr_t) { no_cuda(); }
void restore_masked_backward(const View&, const View&, const View&, const View&, uintptr_t) {
  no_cuda();
}
void masked_patch_loss(const View&, const View&, const View&, int64_t, bool, double, const View&,
                       uintptr_t) {
  no_cuda();
}
void masked_patch_loss_backward(const View&, const View&, const View&, const View&, int64_t, bool,
                                double, const View&, uintptr_t) {
  no_cuda();
}
}  // namespace pyssl::masking::cuda
namespace pyssl::augment::cuda {
void augment_view(uintptr_t, const View&, const View&, int64_t, int64_t, int64_t, double,
                  const std::vector<double>&, const std::vector<double>&, const View&, uintptr_t) {
  no_cuda();
}
}  // namespace pyssl::augment::cuda
#endif

template <typename M>
void bind_masking(M& m, const char* name) {
  namespace ns = pyssl::masking;
  auto sub = m.def_submodule(name);
  const bool cpu = std::string(name) == "masking_cpu";
#define PYSSL_BIND(fn, ...)                                     \
  sub.def(#fn, cpu ? &ns::cpu::fn : &ns::cuda::fn, __VA_ARGS__, \
          py::call_guard<py::gil_scoped_release>())
  PYSSL_BIND(gather_patches, py::arg("imgs"), py::arg("ids"), py::arg("p"), py::arg("out"),
             py::arg("stream") = 0);
  PYSSL_BIND(scatter_patches, py::arg("patches"), py::arg("ids"), py::arg("p"), py::arg("out"),
             py::arg("stream") = 0);
  PYSSL_BIND(random_masking, py::arg("x"), py::arg("noise"), py::arg("keep"), py::arg("visible"),
             py::arg("mask"), py::arg("ids_keep"), py::arg("ids_restore"), py::arg("stream") = 0);
  PYSSL_BIND(restore_masked, py::arg("visible"), py::arg("token"), py::arg("ids_restore"),
             py::arg("out"), py::arg("stream") = 0);
  PYSSL_BIND(restore_masked_backward, py::arg("grad_out"), py::arg("ids_restore"),
             py::arg("grad_visible"), py::arg("grad_token"), py::arg("stream") = 0);
  PYSSL_BIND(masked_patch_loss, py::arg("pred"), py::arg("imgs"), py::arg("mask"), py::arg("p"),
             py::arg("norm_pix"), py::arg("eps"), py::arg("loss"), py::arg("stream") = 0);
  PYSSL_BIND(masked_patch_loss_backward, py::arg("grad_loss"), py::arg("pred"), py::arg("imgs"),
             py::arg("mask"), py::arg("p"), py::arg("norm_pix"), py::arg("eps"),
             py::arg("grad_pred"), py::arg("stream") = 0);
#undef PYSSL_BIND
}

// The contrastive family: CPU entry points only for now (no CUDA kernels yet).
template <typename M>
void bind_contrastive_cpu(M& m) {
  namespace ns = pyssl::contrastive::cpu;
  auto sub = m.def_submodule("contrastive_cpu");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  sub.def("lse_forward", &ns::lse_forward, py::arg("q"), py::arg("k"), py::arg("scale"),
          py::arg("exclude_offset"), py::arg("has_exclude"), py::arg("row_lse"), py::arg("col_lse"),
          py::arg("stream") = 0, nogil);
  sub.def("lse_backward", &ns::lse_backward, py::arg("q"), py::arg("k"), py::arg("scale"),
          py::arg("exclude_offset"), py::arg("has_exclude"), py::arg("row_lse"), py::arg("row_w"),
          py::arg("row_pos"), py::arg("col_lse"), py::arg("col_w"), py::arg("col_pos"),
          py::arg("dq"), py::arg("dk"), py::arg("dscale"), py::arg("stream") = 0, nogil);
  sub.def("sigmoid_forward", &ns::sigmoid_forward, py::arg("q"), py::arg("k"), py::arg("scale"),
          py::arg("bias"), py::arg("loss"), py::arg("stream") = 0, nogil);
  sub.def("sigmoid_backward", &ns::sigmoid_backward, py::arg("q"), py::arg("k"), py::arg("scale"),
          py::arg("bias"), py::arg("grad"), py::arg("dq"), py::arg("dk"), py::arg("dscale"),
          py::arg("dbias"), py::arg("stream") = 0, nogil);
  sub.def("set_isa", &ns::set_isa, py::arg("name"),
          "float32 kernels' instruction set: 'auto', 'portable', 'avx2' or 'avx512' (tests)");
  sub.def("isa", &ns::isa, "the instruction set the float32 kernels use now");
  sub.def("vector_math", &ns::vector_math, py::arg("fn"), py::arg("x"), py::arg("out"), nogil);
}

// The augmentation family: one fused kernel per view, CPU and CUDA.
template <typename M>
void bind_augment(M& m, const char* name) {
  namespace ns = pyssl::augment;
  auto sub = m.def_submodule(name);
  const bool cpu = std::string(name) == "augment_cpu";
  sub.def("augment_view", cpu ? &ns::cpu::augment_view : &ns::cuda::augment_view, py::arg("base"),
          py::arg("images"), py::arg("params"), py::arg("size"), py::arg("interpolation"),
          py::arg("blur_kernel"), py::arg("solarize_threshold"), py::arg("mean"), py::arg("std"),
          py::arg("out"), py::arg("stream") = 0, py::call_guard<py::gil_scoped_release>());
}

// The text family: CPU entry points (GPUs run the Triton kernels).
template <typename M>
void bind_text_cpu(M& m) {
  namespace ns = pyssl::text::cpu;
  auto sub = m.def_submodule("text_cpu");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  sub.def("mask_tokens", &ns::mask_tokens, py::arg("input_ids"), py::arg("special"),
          py::arg("word_ids"), py::arg("seed"), py::arg("vocab_size"), py::arg("mask_token_id"),
          py::arg("prob"), py::arg("mask_replace_prob"), py::arg("random_replace_prob"),
          py::arg("masked"), py::arg("labels"), nogil);
  sub.def("lm_loss_forward", &ns::lm_loss_forward, py::arg("hidden"), py::arg("weight"),
          py::arg("bias"), py::arg("labels"), py::arg("ignore_index"), py::arg("loss"),
          py::arg("lse"), nogil);
  sub.def("lm_loss_backward", &ns::lm_loss_backward, py::arg("hidden"), py::arg("weight"),
          py::arg("bias"), py::arg("labels"), py::arg("ignore_index"), py::arg("lse"),
          py::arg("grad"), py::arg("dhidden"), py::arg("dweight"), py::arg("dbias"), nogil);
  sub.def("lm_loss_fused", &ns::lm_loss_fused, py::arg("hidden"), py::arg("weight"),
          py::arg("bias"), py::arg("labels"), py::arg("ignore_index"), py::arg("mean"),
          py::arg("loss"), py::arg("lse"), py::arg("dhidden"), py::arg("dweight"), py::arg("dbias"),
          nogil);
}

// The colour family (sRGB <-> CIELAB): CPU entry points.
template <typename M>
void bind_colour_cpu(M& m) {
  // PYSSL-COLOUR-BINDINGS
  namespace ns = pyssl::colour::cpu;
  auto sub = m.def_submodule("colour_cpu");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  sub.def("rgb_to_lab", &ns::rgb_to_lab, py::arg("img"), py::arg("out"), py::arg("stream") = 0,
          nogil);
  sub.def("lab_to_rgb", &ns::lab_to_rgb, py::arg("lab"), py::arg("clip"), py::arg("out"),
          py::arg("stream") = 0, nogil);
  sub.def("rgb_to_lab_backward", &ns::rgb_to_lab_backward, py::arg("img"), py::arg("grad"),
          py::arg("grad_in"), py::arg("stream") = 0, nogil);
  sub.def("lab_to_rgb_backward", &ns::lab_to_rgb_backward, py::arg("lab"), py::arg("grad"),
          py::arg("clip"), py::arg("grad_in"), py::arg("stream") = 0, nogil);
}

// The pretext family (rotations, jigsaw): CPU entry points.
template <typename M>
void bind_pretext_cpu(M& m) {
  namespace ns = pyssl::pretext::cpu;
  auto sub = m.def_submodule("pretext_cpu");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  sub.def("rotations", &ns::rotations, py::arg("imgs"), py::arg("out"), nogil);
  sub.def("rotations_backward", &ns::rotations_backward, py::arg("grad_out"), py::arg("grad_imgs"),
          nogil);
}

// The word2vec family (skip-gram with negative sampling): CPU entry points.
template <typename M>
void bind_word2vec_cpu(M& m) {
  // PYSSL-WORD2VEC-BINDINGS
  namespace ns = pyssl::word2vec::cpu;
  auto sub = m.def_submodule("word2vec_cpu");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  sub.def("build_unigram_table", &ns::build_unigram_table, py::arg("counts"), py::arg("power"),
          py::arg("table"), nogil);
  sub.def("train_sgns", &ns::train_sgns, py::arg("tokens"), py::arg("offsets"), py::arg("counts"),
          py::arg("table"), py::arg("syn0"), py::arg("syn1neg"), py::arg("window"),
          py::arg("negative"), py::arg("sample"), py::arg("alpha"), py::arg("min_alpha"),
          py::arg("epoch"), py::arg("epochs"), py::arg("sentence_begin"), py::arg("sentence_end"),
          py::arg("seed"), nogil);
  sub.def("sample_pairs", &ns::sample_pairs, py::arg("tokens"), py::arg("offsets"),
          py::arg("counts"), py::arg("table"), py::arg("window"), py::arg("negative"),
          py::arg("sample"), py::arg("epoch"), py::arg("seed"), py::arg("out"), nogil);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyssl's compiled core: CPU (OpenMP) and CUDA kernels over tensor views";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::enum_<DType>(m, "DType")
      .value("float32", DType::f32)
      .value("float16", DType::f16)
      .value("bfloat16", DType::bf16)
      .value("float64", DType::f64)
      .value("int64", DType::i64)
      .value("int32", DType::i32)
      .value("uint8", DType::u8)
      .value("bool", DType::b8);

  // dynamic_attr: the Python side pins the tensor a View points into (View.owner)
  py::class_<View>(m, "View", py::dynamic_attr())
      .def(py::init([](uintptr_t ptr, DType dtype, std::vector<int64_t> shape,
                       std::vector<int64_t> strides) {
             pyssl::check(shape.size() == strides.size(),
                          "View: shape and strides differ in length");
             return View{ptr, dtype, std::move(shape), std::move(strides)};
           }),
           py::arg("ptr"), py::arg("dtype"), py::arg("shape"), py::arg("strides"))
      .def(py::init<>())
      .def_readonly("ptr", &View::ptr)
      .def_readonly("dtype", &View::dtype)
      .def_readonly("shape", &View::shape)
      .def_readonly("strides", &View::strides);

  m.def("num_threads", &pyssl::num_threads, "threads the CPU kernels use");
  m.def("set_num_threads", &pyssl::set_num_threads, py::arg("n"));
  m.def("convert", &convert, py::arg("src"), py::arg("dst"),
        py::call_guard<py::gil_scoped_release>());

#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
#ifdef PYSSL_WITH_CUDA
  m.attr("cuda") = true;
#else
  m.attr("cuda") = false;
#endif
  m.attr("cuda_archs") = PYSSL_CUDA_ARCHS;
  m.attr("version") = PYSSL_VERSION;

  bind_masking(m, "masking_cpu");
  bind_masking(m, "masking_cuda");
  bind_contrastive_cpu(m);
  bind_augment(m, "augment_cpu");
  bind_augment(m, "augment_cuda");
  bind_text_cpu(m);
  bind_colour_cpu(m);
  bind_pretext_cpu(m);
  bind_word2vec_cpu(m);
}
