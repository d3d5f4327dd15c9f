# The device side of SPAKE2+ and the channel (ssproto.spake2p Verifier, ssproto.channel with
# cryptolib's AES) as a process the host tests talk to over stdin/stdout, one command a line,
# arguments and results in hex.  Run under MicroPython by tests/support/pake_peer.py.
#   key <record>     -> ok                   VerifierKey from a verifier record
#   new <context>    -> ok                   a new session (Verifier) with that context
#   respond <shareP> -> ok <shareV||confirmV>
#   finish <confirmP> -> ok                  then the channel is open
#   open <frame>     -> ok <plaintext>
#   seal <plaintext> -> ok <frame>
# Any refusal or failure: "err <exception class> <message> (heap free N)".  The secrets never appear in the output.
import sys

from ssproto import channel, spake2p


def out(s):
    sys.stdout.write(s + "\n")
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()


def main():
    key = None
    ver = None
    ch = None
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        parts = line.strip().split(" ")
        cmd = parts[0]
        arg = bytes.fromhex(parts[1]) if len(parts) > 1 else b""
        try:
            if cmd == "key":
                key = spake2p.verifier_key(arg)[0]
                out("ok")
            elif cmd == "new":
                ver = spake2p.Verifier(key, None, arg)
                ch = None
                out("ok")
            elif cmd == "respond":
                out("ok " + ver.respond(arg).hex())
            elif cmd == "finish":
                ch = channel.Channel(ver.finish(arg), True)
                out("ok")
            elif cmd == "open":
                out("ok " + ch.open(arg).hex())
            elif cmd == "seal":
                out("ok " + ch.seal(arg).hex())
            elif cmd == "quit":
                return
            else:
                out("err ValueError unknown command")
        except Exception as e:  # ValueError (and PakeError) for a refusal; anything else is reported too
            import gc

            out("err %s %s (heap free %d)" % (e.__class__.__name__, e, gc.mem_free()))


main()
