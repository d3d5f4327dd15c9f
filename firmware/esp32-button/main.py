# SafeSignal panic button firmware entry point.  Never returns: the console owns the port.
import ss_app

ss_app.main()
