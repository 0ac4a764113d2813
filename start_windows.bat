@echo off
rem Start Chatterbox Studio on Windows (double-click, or run from a terminal).
rem
rem First use: creates the environment and downloads the English model by running
rem "python setup_env.py" (run that yourself first for other choices, e.g.
rem "py -3.11 setup_env.py --models turbo --cpu"). Then serves the dashboard with Voila
rem and the repository's settings ("python -m cbx.ui") on http://127.0.0.1:8866/ and
rem opens it in the browser.
rem
rem Arguments are passed to "python -m cbx.ui" (--port N, --no-browser).
rem "start_windows.bat serve [--port N] [--host H]" starts the OpenAI-compatible speech
rem server ("python -m cbx serve", http://127.0.0.1:8880/v1) instead of the dashboard.
rem Environment: CBX_PORT (port), CBX_NO_BROWSER=1 (do not open a browser).
rem Stop with Ctrl+C or by closing this window: that ends the kernel and frees the GPU.
setlocal EnableExtensions
cd /d "%~dp0"

set "ENV_PY=%~dp0.venv_chatterbox\Scripts\python.exe"
if exist "%ENV_PY%" (
    "%ENV_PY%" -c "import importlib.util as u, sys; sys.exit(u.find_spec('voila') is None)" >nul 2>&1
    if not errorlevel 1 goto :run
)

rem A Python that can build the environment: 3.11, 3.12 or 3.10 through the py launcher,
rem else "python" (setup_env.py says what to install if it is the wrong version).
set "SYS_PY="
for %%V in (3.11 3.12 3.10) do (
    if not defined SYS_PY (
        py -%%V -c "import sys" >nul 2>&1
        if not errorlevel 1 set "SYS_PY=py -%%V"
    )
)
if not defined SYS_PY (
    python -c "import sys" >nul 2>&1
    if not errorlevel 1 set "SYS_PY=python"
)
if not defined SYS_PY (
    echo Python 3.10-3.12 is needed to set up Chatterbox Studio and none was found.
    echo Install Python 3.11 from https://www.python.org/downloads/windows/
    echo and tick "Add python.exe to PATH", then run this script again.
    pause
    exit /b 2
)

set "WHERE_FILE=%TEMP%\cbx_env_python_%RANDOM%.txt"
%SYS_PY% setup_env.py --where >"%WHERE_FILE%" 2>nul
if not errorlevel 1 goto :found

echo First run: setting up the environment with %SYS_PY% setup_env.py ...
%SYS_PY% setup_env.py
set "RC=%ERRORLEVEL%"
if "%RC%"=="4" goto :weights_missing
if "%RC%"=="5" goto :weights_missing
if not "%RC%"=="0" (
    echo Setup failed ^(exit code %RC%^); the messages above say why.
    del "%WHERE_FILE%" >nul 2>&1
    pause
    exit /b %RC%
)
goto :after_setup
:weights_missing
echo The weights are not complete ^(see above^); starting anyway: the dashboard shows what is missing.
:after_setup
%SYS_PY% setup_env.py --where >"%WHERE_FILE%"
if errorlevel 1 (
    echo Setup finished but no environment with Voila was found.
    del "%WHERE_FILE%" >nul 2>&1
    pause
    exit /b 3
)

:found
set /p ENV_PY=<"%WHERE_FILE%"
del "%WHERE_FILE%" >nul 2>&1

:run
if /i "%~1"=="serve" goto :serve
set "PORT=8866"
if defined CBX_PORT set "PORT=%CBX_PORT%"
set "NO_BROWSER="
if "%CBX_NO_BROWSER%"=="1" set "NO_BROWSER=--no-browser"
echo Chatterbox Studio: http://127.0.0.1:%PORT%/
echo (Python: %ENV_PY%. Press Ctrl+C or close this window to stop it; that also frees the GPU.)
"%ENV_PY%" -m cbx.ui %NO_BROWSER% %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" pause
exit /b %RC%

:serve
rem the arguments after "serve" (shift does not change %*)
shift
set "ARGS="
:serve_args
if "%~1"=="" goto :serve_run
set ARGS=%ARGS% %1
shift
goto :serve_args
:serve_run
echo (Python: %ENV_PY%. Press Ctrl+C or close this window to stop the server; that also frees the GPU.)
"%ENV_PY%" -m cbx serve %ARGS%
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" pause
exit /b %RC%
