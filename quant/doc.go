// Package quant converts between the storage number formats of model weights
// and float32: bfloat16 and IEEE float16 in both directions, float8 (e4m3fn
// and e5m2) to float32, DeepSeek-V3's block-scaled fp8 dequantisation, and
// symmetric int8 quantisation for the int8 weight path.
//
// All byte-slice converters read and write little-endian data, the byte order
// of safetensors files. They write into caller-provided slices (only
// DequantFP8Blocks returns a new one) and report mismatched lengths and
// shapes as errors instead of panicking.
package quant
