#!/usr/bin/env bash
# emu_mutants.sh [NAME...]: shows that the variant tests can fail. Each
# mutant plants one bug in a copy of the kernels that only one kernel
# instance runs, builds that copy for the CPU emulation, and runs the
# subtest of TestCUDAVariants for that instance: it must FAIL. The same
# subtest on the unmutated kernels must PASS (make emu-test). Slow (one
# emulation build per mutant); not part of make test.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# name|file|sed expression|subtest that must fail
MUTANTS=(
	# Four tokens per thread: tokens 2 and 3 of each thread never written.
	'tok4_writeback|quant_kernels.cu|/codes\[\(size_t\)m \* K \+ k\] = bi\[t\];/s/codes\[/if (t < 2) codes[/|TestCUDAVariants/quantize/d=8/d8x4/cosine'
	# d = 8 kernels: the codeword tile offset forgotten (only V > 512 shows it).
	'tile_offset|quant_kernels.cu|s/bi\[t\] = j0 \+ j \+ idx;/bi[t] = j + idx;/|TestCUDAVariants/quantize/d=8/d8x2/l2'
	# d = 8 kernels: the last V % 8 codewords of a tile skipped.
	'tail|quant_kernels.cu|s/for \(; j < n; \+\+j\) \{ \/\/ the tile/for (; j < 0; ++j) { \/\/ the tile/|TestCUDAVariants/quantize/d=8/d8x4/l2'
	# General d: the d % 4 tail of the dot product dropped.
	'general_tail|quant_kernels.cu|s/for \(; i < d; \+\+i\) s0 =/for (; i < d4; ++i) s0 =/|TestCUDAVariants/quantize/d=10/auto/cosine'
	# 128x128 GEMM tile only: a thread's second column group written over its first.
	'gemm128_cols|attention_kernels.cu|s/const int gn = bn \+ 64 \* \(j \/ 4\) \+ tx \* 4 \+ j % 4;/const int gn = bn + 64 * (j \/ 8) + tx * 4 + j % 4;/|TestCUDAVariants/project/hd24/tile=128/causal=false'
)

want=("$@")
fails=0
for m in "${MUTANTS[@]}"; do
	IFS='|' read -r name file expr run <<<"$m"
	if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then continue; fi
	dir=$(mktemp -d /tmp/unitok_mutant_$name.XXXXXX)
	git ls-files -z | xargs -0 cp --parents -t "$dir"
	sed -E -i "$expr" "$dir/$file"
	if cmp -s "$file" "$dir/$file"; then
		echo "mutant $name: the sed expression matched nothing in $file (stale mutant)"
		fails=$((fails + 1))
		rm -rf "$dir"
		continue
	fi
	echo "mutant $name: $(diff "$file" "$dir/$file" | grep '^>' | head -n 1 | sed 's/^> *//')"
	(cd "$dir" && make -s emu-test EMU_RUN="$run" >"$dir/log.txt" 2>&1)
	rc=$?
	if [ "$rc" -ne 0 ] && grep -q -- '--- FAIL' "$dir/log.txt"; then
		echo "  caught: $(grep -m1 -E 'Error:|cuda_variants_test.go:[0-9]+: ' "$dir/log.txt" | sed 's/^ *//' | cut -c1-160)"
		rm -rf "$dir"
	else
		echo "  NOT CAUGHT (exit $rc); log: $dir/log.txt"
		fails=$((fails + 1))
	fi
done
[ "$fails" -eq 0 ] && echo "every mutant was caught" || { echo "$fails mutant(s) not caught"; exit 1; }
