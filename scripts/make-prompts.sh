#!/usr/bin/env bash
# Regenerates the default system prompts the edge ships (edge-node/prompts/{en,zh}/*.wav):
# speech by espeak-ng, music on hold by sox, all 8 kHz mono mu-law WAV (what G.711 phones get
# without transcoding). The output is committed; run this only to change a text.
# Needs: apt-get install espeak-ng sox
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/edge-node/prompts"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

say_to() { # lang voice name text
  mkdir -p "$out/$1"
  espeak-ng -v "$2" -s 150 -w "$tmp/s.wav" "$4"
  sox "$tmp/s.wav" -r 8000 -c 1 -e mu-law "$out/$1/$3.wav" norm -3
}

en() { say_to en en-us "$1" "$2"; }
zh() { say_to zh cmn "$1" "$2"; }

en queue-join "Thank you for calling. All of our agents are busy. Please hold."
zh queue-join "感谢您的来电，坐席正忙，请稍候。"
en queue-periodic "Your call is important to us. Please stay on the line."
zh queue-periodic "您的来电对我们很重要，请不要挂机。"
en queue-position "You are caller number"
zh queue-position "您前面排队的位置是第"
en queue-wait "Your estimated wait time is"
zh queue-wait "预计等待时间"
en minutes "minutes"
zh minutes "分钟"
en thank-you "Thank you for waiting."
zh thank-you "感谢您的耐心等待。"
en agent-id "You are connected to agent"
zh agent-id "为您服务的坐席工号是"
en agent-logged-in "Agent logged in."
zh agent-logged-in "坐席已签入。"
en agent-logged-out "Agent logged out."
zh agent-logged-out "坐席已签出。"
en agent-paused "Agent paused."
zh agent-paused "坐席已暂停服务。"
en agent-resumed "Agent resumed."
zh agent-resumed "坐席已恢复服务。"
en callback-offer "To be called back, press the pound key. To keep waiting, stay on the line."
zh callback-offer "如需回拨，请按井号键；如需继续等待，请不要挂机。"
en callback-registered "Your callback request is registered. Goodbye."
zh callback-registered "您的回拨请求已登记，再见。"
en survey "Please rate our service from one to five."
zh survey "请为我们的服务打分，一到五分。"
en goodbye "Thank you. Goodbye."
zh goodbye "谢谢，再见。"
en invalid "The code you dialled is not valid."
zh invalid "您拨打的特征码无效。"
en ivr-welcome "Thank you for calling. Please make your selection, or dial an extension number."
zh ivr-welcome "感谢您的来电。请选择菜单，或直接拨分机号码。"
for d in 0 1 2 3 4 5 6 7 8 9; do
  en "digit-$d" "$d"
  zh "digit-$d" "$d"
done
# Music on hold: a soft arpeggio, 8 s, looped by the edge.
sox -n -r 8000 -c 1 "$tmp/m.wav" synth 2 sine 392 sine 494 : synth 2 sine 440 sine 523 : synth 2 sine 349 sine 440 : synth 2 sine 392 sine 494 vol 0.25 fade t 0.05 0 0.05 2>/dev/null \
  || sox -n -r 8000 -c 1 "$tmp/m.wav" synth 8 sine 440 vol 0.2
for l in en zh; do sox "$tmp/m.wav" -r 8000 -c 1 -e mu-law "$out/$l/moh.wav"; done
# Ringback tones, one cadence each (looped by the edge): North America 440+480 Hz 2 s on 4 s
# off; China 450 Hz 1 s on 4 s off.
sox -n -r 8000 -c 1 "$tmp/rb-en.wav" synth 2 sine 440 sine 480 vol 0.3 pad 0 4
sox -n -r 8000 -c 1 "$tmp/rb-zh.wav" synth 1 sine 450 vol 0.3 pad 0 4
for l in en zh; do sox "$tmp/rb-$l.wav" -r 8000 -c 1 -e mu-law "$out/$l/ringback.wav"; done
du -sh "$out"
