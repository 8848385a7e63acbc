# SPDX-License-Identifier: MIT
# bench/plot.gp: called by bench/plot.sh with dir (the .dat files), out
# (the PNG prefix) and subtitle set.
set terminal pngcairo size 1400,700 font "sans,10"
set datafile missing "?"
set style data histogram
set style fill solid 0.8 border -1
set grid ytics
set xtics rotate by -40 nomirror
set key top right
set bmargin 7

set output out . "-mbps.png"
set title "MB/s over loopback (median, bars: min-max of the runs)\n" . subtitle
set ylabel "MB/s (10^6 bytes/s)"
set yrange [0:*]
set style histogram errorbars gap 2 lw 1
plot dir . "/mbps.dat" using 2:3:4:xtic(1) title "1 channel", \
     "" using 5:6:7 title "2 channels", \
     "" using 8:9:10 title "4 channels"

set output out . "-cpu.png"
set key top left
set title "CPU seconds per GiB moved, each end, 1 channel (median)\n" . subtitle
set ylabel "CPU s/GiB (user+system)"
set style histogram clustered gap 2
plot dir . "/cpu.dat" using 2:xtic(1) title "sender", \
     "" using 3 title "receiver", \
     "" using 4 title "both ends"
