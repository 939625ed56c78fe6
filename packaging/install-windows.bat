@echo off
rem Install Patina for the current user: double-click this file.
rem The PowerShell execution policy is bypassed for this one process only.
setlocal
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0install-windows.ps1" %*
set "RC=%ERRORLEVEL%"
echo.
pause
exit /b %RC%
