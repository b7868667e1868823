#!/bin/bash
# the 6,000-update screening: every 2,000-update run resumed to 6,000, two at a time
printf "%s\n" base_s1 base_s2 c2_s1 c2_s2 c1_s1 c1_s2 c3_s1 c3_s2 | \
  xargs -P 2 -I{} bash -c 'echo "$(date +%T) start {}" >> /work/exp29/queue6000.log; /work/exp29/resume.sh {} 6000; echo "$(date +%T) end {}" >> /work/exp29/queue6000.log'
