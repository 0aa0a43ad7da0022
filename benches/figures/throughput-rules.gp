# Switch throughput (median Mpps) against the number of rules, few and many
# flows: microseg, nftables linear chain, nftables verdict maps; kernel
# forwarding without rules and the bare AF_XDP forwarder as reference lines.
# Data (fig-throughput-rules.csv): rules,x,microseg_few,microseg_many,
#   nft_linear_few,nft_linear_many,nft_vmap_few,nft_vmap_many,
#   kernel_norules_few,kernel_norules_many,bare_afxdp_few,bare_afxdp_many
# (x is the categorical position of the rule count; NaN = not measured).
# Usage: gnuplot -e "data='fig-throughput-rules.csv'; out='throughput-rules.svg'" throughput-rules.gp
set terminal svg size 720,420 dynamic enhanced font 'sans,11' background rgb 'white'
set encoding utf8
set output out
set datafile separator ','
# The first line is the header; titles are given below.
set key autotitle columnhead
set datafile missing 'NaN'
set title 'Switch throughput vs number of rules (veth testbed, 64-byte frames)'
set xlabel 'rules in the policy'
set ylabel 'forwarded (Mpps)'
set xrange [-0.25:*]
set offsets 0, 0.25, 0, 0
set yrange [0:*]
set grid ytics
set key below horizontal maxcols 4 noenhanced
plot data using 2:3:xtic(1) with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'microseg, few flows', \
     '' using 2:4 with linespoints lw 2 pt 6 dt 2 lc rgb '#1f77b4' title 'microseg, many flows', \
     '' using 2:5 with linespoints lw 2 pt 5 lc rgb '#d62728' title 'nft linear, few flows', \
     '' using 2:6 with linespoints lw 2 pt 4 dt 2 lc rgb '#d62728' title 'nft linear, many flows', \
     '' using 2:7 with linespoints lw 2 pt 9 lc rgb '#2ca02c' title 'nft vmaps, few flows', \
     '' using 2:8 with linespoints lw 2 pt 8 dt 2 lc rgb '#2ca02c' title 'nft vmaps, many flows', \
     '' using 2:9 with lines lw 1.5 dt 3 lc rgb '#555555' title 'kernel fwd, no rules, few', \
     '' using 2:10 with lines lw 1.5 dt 4 lc rgb '#555555' title 'kernel fwd, no rules, many', \
     '' using 2:11 with lines lw 1.5 dt 3 lc rgb '#9467bd' title 'bare AF_XDP, few', \
     '' using 2:12 with lines lw 1.5 dt 4 lc rgb '#9467bd' title 'bare AF_XDP, many'
