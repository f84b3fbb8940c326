# Sourced by run.sh: turns "--name value" and "--name=value" into name=value for every variable that
# run.sh set before sourcing this file (dashes in names become underscores). Unknown names and options
# without a value stop the script, naming the option. "--help" prints the settable variables.
# (Same contract as Kaldi's utils/parse_options.sh, which WeSpeaker's recipes source; written anew.)

_kd_usage() {
  echo "usage: $0 [--name value ...]; the settings (dashes or underscores in names):"
  sed -n '/^# ---- settings/,/^# ---- end of settings/p' "$0" | grep -v '^# ----'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _kd_usage; exit 0 ;;
    --*=*) _kd_name="${1%%=*}"; _kd_value="${1#*=}"; shift ;;
    --*)
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 2; fi
      _kd_name="$1"; _kd_value="$2"; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 2 ;;
  esac
  _kd_name="${_kd_name#--}"; _kd_name="${_kd_name//-/_}"
  if ! [[ "$_kd_name" =~ ^[a-z][a-z0-9_]*$ ]] || [ -z "${!_kd_name+set}" ]; then
    echo "$0: unknown option --${_kd_name//_/-} (see --help)" >&2; exit 2
  fi
  printf -v "$_kd_name" '%s' "$_kd_value"
done
unset _kd_name _kd_value
