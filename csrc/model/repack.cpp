// Conversion of BitLinear tensors from file types into the T2 / B1 layouts (see repack.h).
#include "model/repack.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "format/dequant.h"
#include "format/types.h"

namespace bitnet {
namespace {

using kernels::kT2Block;
using kernels::kT2BlockBytes;

// Writes 2-bit code c (= w + 1) for column j into a T2 row.
inline void set_t2_code(uint8_t* row, int64_t j, int code) {
    const int64_t block = j / kT2Block;
    const int64_t within = j % kT2Block;
    row[block * kT2BlockBytes + within % 32] |= static_cast<uint8_t>(code << (2 * (within / 32)));
}

// Collects the per-row scale of a block format: every block with a non-zero scale must carry
// the same value. Blocks with scale 0 hold only zero weights and are neutral.
class RowScale {
 public:
    RowScale(const GgufFile& f, const GgufTensor& t, int64_t row) : f_(f), t_(t), row_(row) {}

    void add(float d) {
        if (d == 0.0f) return;
        if (!std::isfinite(d)) {
            throw FormatError(str_cat(f_.path(), ": tensor '", t_.name, "' row ", row_,
                                      " has a non-finite block scale ", d));
        }
        if (!have_) {
            value_ = d;
            have_ = true;
        } else if (d != value_) {
            throw UnsupportedError(str_cat(
                f_.path(), ": tensor '", t_.name, "' row ", row_, " mixes block scales ", value_,
                " and ", d, "; BitNet weights have one scale per tensor (is this a BitNet model?)"));
        }
    }
    float value() const { return have_ ? value_ : 0.0f; }

 private:
    const GgufFile& f_;
    const GgufTensor& t_;
    int64_t row_;
    bool have_ = false;
    float value_ = 0.0f;
};

[[noreturn]] void bad_code(const GgufFile& f, const GgufTensor& t, int64_t row, int64_t col,
                           int code) {
    throw FormatError(str_cat(f.path(), ": tensor '", t.name, "' (", type_name(t.type),
                              ") row ", row, " column ", col, " holds code ", code,
                              ", which is not a ternary value"));
}

uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// TQ2_0: blocks of 256 as {uint8 qs[64]; fp16 d}. Each 128-half of qs is exactly one T2 block.
void pack_tq2_0(const GgufFile& f, const GgufTensor& t, PackedLinear& out) {
    const int64_t n_blocks = out.n_in / 256;
    const int64_t src_row_bytes = n_blocks * 66;
    const int64_t dst_row_bytes = out.k_pad / 4;
    for (int64_t r = 0; r < out.n_out; ++r) {
        const uint8_t* src = t.data + r * src_row_bytes;
        uint8_t* dst = out.packed.data() + r * dst_row_bytes;
        RowScale scale(f, t, r);
        for (int64_t b = 0; b < n_blocks; ++b) {
            const uint8_t* blk = src + b * 66;
            const float d = fp16_to_float(load_u16(blk + 64));
            scale.add(d);
            for (int i = 0; i < 64; ++i) {
                uint8_t byte = blk[i];
                for (int k = 0; k < 4; ++k) {
                    if (((byte >> (2 * k)) & 3) == 3) bad_code(f, t, r, b * 256 + (i / 32) * 128 + k * 32 + i % 32, 3);
                }
                // A zero scale means every weight of the block is zero whatever its codes.
                dst[b * 64 + i] = d == 0.0f ? 0x55 : byte;
            }
        }
        out.row_scale[r] = scale.value();
    }
}

// TQ1_0: blocks of 256 as {uint8 qs[48]; uint8 qh[4]; fp16 d}, five (or four) base-3 digits per
// byte, stored as ceil(v * 256 / 243). Digit n of byte q is ((uint8)(q * 3^n) * 3) >> 8.
void pack_tq1_0(const GgufFile& f, const GgufTensor& t, PackedLinear& out) {
    static const uint8_t kPow3[5] = {1, 3, 9, 27, 81};
    const int64_t n_blocks = out.n_in / 256;
    const int64_t src_row_bytes = n_blocks * 54;
    const int64_t dst_row_bytes = out.k_pad / 4;
    for (int64_t r = 0; r < out.n_out; ++r) {
        const uint8_t* src = t.data + r * src_row_bytes;
        uint8_t* dst = out.packed.data() + r * dst_row_bytes;
        std::memset(dst, 0, static_cast<size_t>(dst_row_bytes));
        RowScale scale(f, t, r);
        for (int64_t b = 0; b < n_blocks; ++b) {
            const uint8_t* blk = src + b * 54;
            const float d = fp16_to_float(load_u16(blk + 52));
            scale.add(d);
            auto digit = [&](uint8_t q, int n) {
                const uint8_t x = static_cast<uint8_t>(q * kPow3[n]);
                return (static_cast<uint16_t>(x) * 3) >> 8;
            };
            auto put = [&](int64_t j, int trit) {
                if (trit > 2) bad_code(f, t, r, b * 256 + j, trit);
                set_t2_code(dst, b * 256 + j, d == 0.0f ? 1 : trit);
            };
            for (int m = 0; m < 32; ++m) {
                for (int n = 0; n < 5; ++n) put(n * 32 + m, digit(blk[m], n));
            }
            for (int m = 0; m < 16; ++m) {
                for (int n = 0; n < 5; ++n) put(160 + n * 16 + m, digit(blk[32 + m], n));
            }
            for (int m = 0; m < 4; ++m) {
                for (int n = 0; n < 4; ++n) put(240 + n * 4 + m, digit(blk[48 + m], n));
            }
        }
        out.row_scale[r] = scale.value();
    }
}

// I2_S (bitnet.cpp, x86): the flattened tensor in blocks of 128 values / 32 bytes; value
// 128b + 32k + p sits at bits (6 - 2k) of byte 32b + p; code c means weight c - 1. One float32
// scale for the whole tensor follows the n/4 code bytes.
void pack_i2_s(const GgufFile& f, const GgufTensor& t, PackedLinear& out) {
    const uint64_t n = t.n_elements;
    BITNET_CHECK(n % 128 == 0, FormatError, f.path(), ": I2_S tensor '", t.name, "' has ", n,
                 " elements, not a multiple of 128");
    float scale;
    std::memcpy(&scale, t.data + n / 4, 4);
    BITNET_CHECK(std::isfinite(scale), FormatError, f.path(), ": I2_S tensor '", t.name,
                 "' has a non-finite scale ", scale);
    const int64_t dst_row_bytes = out.k_pad / 4;
    std::memset(out.packed.data(), 0, out.packed.size());
    for (uint64_t i = 0; i < n; ++i) {
        const uint64_t block = i / 128;
        const uint64_t within = i % 128;
        const int code = (t.data[block * 32 + within % 32] >> (6 - 2 * (within / 32))) & 3;
        const int64_t r = static_cast<int64_t>(i / out.n_in);
        const int64_t j = static_cast<int64_t>(i % out.n_in);
        if (code == 3) bad_code(f, t, r, j, code);
        set_t2_code(out.packed.data() + r * dst_row_bytes, j, code);
    }
    std::fill(out.row_scale.begin(), out.row_scale.end(), scale);
}

// Q1_0: blocks of 128 as {fp16 d; uint8 qs[16]}; bit j of the block is (qs[j/8] >> (j%8)) & 1,
// 1 meaning +d and 0 meaning -d: the B1 bit order, so bits copy through.
void pack_q1_0(const GgufFile& f, const GgufTensor& t, PackedLinear& out) {
    const int64_t n_blocks = out.n_in / 128;
    const int64_t src_row_bytes = n_blocks * 18;
    const int64_t dst_row_bytes = out.k_pad / 8;
    for (int64_t r = 0; r < out.n_out; ++r) {
        const uint8_t* src = t.data + r * src_row_bytes;
        uint8_t* dst = out.packed.data() + r * dst_row_bytes;
        RowScale scale(f, t, r);
        for (int64_t b = 0; b < n_blocks; ++b) {
            const float d = fp16_to_float(load_u16(src + b * 18));
            BITNET_CHECK(d != 0.0f || out.n_out == 0, UnsupportedError, f.path(), ": Q1_0 tensor '",
                         t.name, "' row ", r, " has a zero block scale; binary weights cannot be 0");
            scale.add(d);
            std::memcpy(dst + b * 16, src + b * 18 + 2, 16);
        }
        out.row_scale[r] = scale.value();
    }
}

// F32 / F16 / BF16: exact when the tensor holds {-b, 0, +b}; otherwise absmean (if allowed).
void pack_float(const GgufFile& f, const GgufTensor& t, PackedLinear& out, bool allow_latent) {
    const int64_t n = out.n_out * out.n_in;
    std::vector<float> w(static_cast<size_t>(n));
    const uint64_t row_bytes = t.size_bytes / static_cast<uint64_t>(out.n_out);
    for (int64_t r = 0; r < out.n_out; ++r) {
        dequantize_row(t.type, t.data + r * row_bytes, out.n_in, w.data() + r * out.n_in);
    }
    float b = 0.0f;
    bool ternary = true;
    for (float v : w) {
        const float a = std::fabs(v);
        if (a == 0.0f) continue;
        if (b == 0.0f) b = a;
        if (a != b || !std::isfinite(a)) {
            ternary = false;
            break;
        }
    }
    std::vector<int8_t> codes(static_cast<size_t>(n));
    float scale = b;
    if (ternary) {
        for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<int8_t>(w[i] > 0 ? 1 : w[i] < 0 ? -1 : 0);
    } else {
        BITNET_CHECK(allow_latent, UnsupportedError, f.path(), ": tensor '", t.name, "' (",
                     type_name(t.type), ") does not hold ternary values {-b, 0, +b}; this "
                     "architecture expects ternary weights (convert the checkpoint with "
                     "`bitnet convert`)");
        for (float v : w) {
            BITNET_CHECK(std::isfinite(v), FormatError, f.path(), ": tensor '", t.name,
                         "' contains a non-finite value");
        }
        scale = absmean_ternarize(w.data(), n, codes.data());
    }
    const int64_t dst_row_bytes = out.k_pad / 4;
    std::memset(out.packed.data(), 0, out.packed.size());
    for (int64_t r = 0; r < out.n_out; ++r) {
        for (int64_t j = 0; j < out.n_in; ++j) {
            set_t2_code(out.packed.data() + r * dst_row_bytes, j, codes[r * out.n_in + j] + 1);
        }
    }
    std::fill(out.row_scale.begin(), out.row_scale.end(), scale);
}

}  // namespace

float absmean_ternarize(const float* w, int64_t n, int8_t* codes) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += std::fabs(w[i]);
    const float mean = n > 0 ? static_cast<float>(total / static_cast<double>(n)) : 0.0f;
    // As in BitNet's reference: s = 1 / clamp(mean, 1e-5); code = clamp(round(w * s), -1, 1).
    const float s = 1.0f / std::max(mean, 1e-5f);
    for (int64_t i = 0; i < n; ++i) {
        const float q = std::nearbyint(w[i] * s);
        codes[i] = static_cast<int8_t>(q > 1.0f ? 1 : q < -1.0f ? -1 : q);
    }
    return 1.0f / s;
}

PackedLinear pack_linear(const GgufFile& f, const GgufTensor& t, bool allow_latent) {
    BITNET_CHECK(t.shape.size() == 2, FormatError, f.path(), ": tensor '", t.name, "' has shape ",
                 t.shape_str(), ", expected a matrix");
    PackedLinear out;
    out.name = t.name;
    out.n_in = static_cast<int64_t>(t.shape[0]);
    out.n_out = static_cast<int64_t>(t.shape[1]);
    out.k_pad = kernels::padded_k(out.n_in);
    out.source_type = t.type;
    out.row_scale.assign(static_cast<size_t>(out.n_out), 0.0f);

    const auto type = static_cast<TensorType>(t.type);
    out.binary = type == TensorType::Q1_0;
    const int64_t row_bytes = out.binary ? out.k_pad / 8 : out.k_pad / 4;
    out.packed = AlignedBuffer<uint8_t>(static_cast<size_t>(out.n_out * row_bytes), true);
    // Columns past n_in keep zero bytes (code 0 in T2, bit 0 in B1): any valid code works there,
    // because the kernels' padded activations are 0.
    std::memset(out.packed.data(), 0, out.packed.size());

    switch (type) {
        case TensorType::TQ2_0: pack_tq2_0(f, t, out); break;
        case TensorType::TQ1_0: pack_tq1_0(f, t, out); break;
        case TensorType::I2_S: pack_i2_s(f, t, out); break;
        case TensorType::Q1_0: pack_q1_0(f, t, out); break;
        case TensorType::F32:
        case TensorType::F16:
        case TensorType::BF16: pack_float(f, t, out, allow_latent); break;
        default:
            throw FormatError(str_cat(
                f.path(), ": tensor '", t.name, "' has type ", type_name(t.type),
                ", expected a BitLinear type (TQ2_0, TQ1_0, I2_S, Q1_0, or ternary F32/F16/BF16)"));
    }
    return out;
}

int PackedLinear::code(int64_t r, int64_t j) const {
    if (binary) {
        const uint8_t* row = packed.data() + r * (k_pad / 8);
        return ((row[j / 8] >> (j % 8)) & 1) ? 1 : -1;
    }
    if (kernel == kernels::TernaryKernel::kLut) {
        const uint8_t* tile = packed.data() + (r / kernels::kL2TileRows) * (k_pad / 4) * kernels::kL2ChunkBytes;
        const uint8_t byte = tile[(j / 4) * kernels::kL2ChunkBytes + r % kernels::kL2TileRows];
        const int idx = (byte >> (4 * ((j % 4) / 2))) & 0x0f;
        return (j % 2 == 0 ? idx / 3 : idx % 3) - 1;
    }
    if (kernel == kernels::TernaryKernel::kT3) {
        const int64_t n_steps = kernels::padded_k3(n_in) / kernels::kT3StepCols;
        const uint8_t* step = packed.data() +
            ((r / kernels::kT3TileRows) * n_steps + j / kernels::kT3StepCols) * kernels::kT3StepBytes;
        const bool upper = r % kernels::kT3TileRows >= 16;
        const int64_t lane = 4 * (r % 16) + (j % kernels::kT3StepCols) / 3;
        const int nibble = upper ? step[lane] >> 4 : step[lane] & 15;
        const int idx = nibble | ((step[64 + (upper ? 8 : 0) + lane / 8] >> (lane % 8)) & 1) << 4;
        const int c = static_cast<int>(j % 3);
        return (c == 0 ? idx / 9 : c == 1 ? idx / 3 % 3 : idx % 3) - 1;
    }
    const uint8_t* row = packed.data() + r * (k_pad / 4);
    const int64_t within = j % kT2Block;
    const uint8_t byte = row[(j / kT2Block) * kT2BlockBytes + within % 32];
    return ((byte >> (2 * (within / 32))) & 3) - 1;
}

void PackedLinear::use_kernel(kernels::TernaryKernel k) {
    if (binary || k == kernel) return;
    if (k == kernels::TernaryKernel::kT3 && kernel == kernels::TernaryKernel::kMad) {
        AlignedBuffer<uint8_t> t3(static_cast<size_t>(kernels::t3_bytes(n_out, n_in)), true);
        kernels::pack_t3_from_t2(t2(), t3.data());
        packed = std::move(t3);
        kernel = k;
    }
    if (k == kernels::TernaryKernel::kLut) {
        const int64_t n_tiles = (n_out + kernels::kL2TileRows - 1) / kernels::kL2TileRows;
        AlignedBuffer<uint8_t> l2(static_cast<size_t>(n_tiles * 8 * k_pad), true);
        kernels::pack_l2_from_t2(t2(), l2.data());
        packed = std::move(l2);
        kernel = k;
    }
}

}  // namespace bitnet
