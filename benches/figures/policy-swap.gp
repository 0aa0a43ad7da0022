# Policy swap latency against the policy's size (log-log): microseg's first
# push and edit (PolicyEngine::apply) against `nft -f` of the same rules.
# Data (fig-policy-swap.csv): set,rules,first_push_ms,edit_ms,nft_f_ms
# Usage: gnuplot -e "data='fig-policy-swap.csv'; out='policy-swap.svg'" policy-swap.gp
set terminal svg size 720,420 dynamic enhanced font 'sans,11' background rgb 'white'
set encoding utf8
set output out
set datafile separator ','
# The first line is the header; titles are given below.
set key autotitle columnhead
set datafile missing 'NaN'
set title 'Policy swap: time until a new policy is in force vs its size'
set xlabel 'rules in the policy (log scale)'
set ylabel 'median time (ms, log scale)'
set logscale xy
set format x '%.0s%c'
set format y '%.0f'
set offsets graph 0.05, graph 0.05, 0, 0
set grid
set key top left noenhanced
plot data using 2:3 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'microseg, first push', \
     '' using 2:4 with linespoints lw 2 pt 5 lc rgb '#2ca02c' title 'microseg, an edit', \
     '' using 2:5 with linespoints lw 2 pt 9 lc rgb '#d62728' title 'nft -f (linear chain)'
